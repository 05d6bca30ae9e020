"""The offline template teacher: the same corpus files, written from item metadata with no network.

It is the demo default, deterministic, and every record is marked
`source: "template"` (and the manifest `template: true`): these texts exercise
the pipeline, they are not the enrichment an LLM teacher would write. They obey
the LLM teacher's rules: item narratives name the item only by its SID, the
reasoning never names the target, user narratives recite the history by SIDs.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from sidjax.data.corpus import ItemText, UserText
from sidjax.data.dataset import Item, RecDataset
from sidjax.teacher.prompts import description_text
from sidjax.utils.progress import progress

SOURCE = "template"


def _replace_title(text: str, title: str, sid: str) -> str:
    return re.sub(re.escape(title), sid, text, flags=re.IGNORECASE) if title else text


def _first_sentences(text: str, max_chars: int) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", text)
    out = ""
    for s in sentences:
        if out and len(out) + len(s) + 1 > max_chars:
            break
        out = f"{out} {s}".strip()
    return out[:max_chars]


def _brand_phrase(item: Item) -> str:
    """' from <brand>', unless the brand would spell out the title (some items are titled by their brand)."""
    return f" from {item.brand}" if item.brand and item.title.casefold() not in item.brand.casefold() else ""


def item_text(item_id: int, item: Item, sid: str) -> ItemText:
    description = _first_sentences(description_text(item), 400)
    analysis = f"{item.title} is a product{_brand_phrase(item)}."
    if item.categories:
        analysis += f" It is listed under {item.categories}."
    if description:
        analysis += f" {description}"
    narrative = f"Item {sid} is a product{_brand_phrase(item)}."
    if item.categories:
        narrative += f" {sid} is listed under {item.categories}."
    if description:
        narrative += f" About {sid}: {_replace_title(description, item.title, sid)}"
    return ItemText(item=item_id, sid=sid, analysis=analysis, narrative=narrative, source=SOURCE)


def _common_brand(items: Sequence[Item]) -> str:
    brands = Counter(i.brand for i in items if i.brand)
    if not brands:
        return ""
    brand, count = brands.most_common(1)[0]
    return brand if count >= 2 else ""


def user_text(split: str, index: int, user: int, history: Sequence[int], target: int, dataset: RecDataset, item_sids: Sequence[str]) -> UserText:
    items = [dataset.items[h] for h in history]
    target_item = dataset.items[target]
    brand = _common_brand(items)
    # A history item the answer cannot be told apart from (same item, SID or title): naming it is fair.
    same = [h for h in history if item_sids[h] == item_sids[target] or dataset.items[h].title.casefold() == target_item.title.casefold()]
    if len(items) == 1:
        steps = [f"The user bought one item so far: {items[0].title}."]
    else:
        steps = [
            f"The user bought {len(items)} items, most recently {items[-1].title}.",
            f"Several of them come from {brand}, so the user trusts that brand." if brand else
            "The purchases span different brands, so the user chooses by function rather than brand.",
        ]
    if same:
        steps.append(f"The user already bought {dataset.items[same[-1]].title} before and is likely to buy it again.")
    else:
        steps.append(f"The next item is likely a related product{_brand_phrase(target_item)} that complements the most recent purchase.")
    reasoning = "\n".join(f"{k}. {s}" for k, s in enumerate(steps, 1))
    h_sids = [item_sids[h] for h in history]
    narrative = f"The user interacted with {', '.join(h_sids)} in this order."
    if brand:
        narrative += f" Several of these items come from {brand}."
    narrative += f" The latest item, {h_sids[-1]}, points to what the user needs next. The next item is {item_sids[target]}."
    return UserText(split=split, index=index, user=user, target=target, reasoning=reasoning, narrative=narrative, source=SOURCE)


def write_offline(
    dataset: RecDataset, item_sids: Sequence[str], item_ids: Sequence[int], user_rows: Sequence[tuple[str, int]]
) -> tuple[list[ItemText], list[UserText]]:
    """Template texts for `item_ids` and for the samples `(split, row)` in `user_rows`."""
    items = [item_text(i, dataset.items[i], item_sids[i]) for i in item_ids]
    users = []
    for split_name, row in progress(user_rows, desc="template teacher users", unit="sample"):
        split = dataset.splits[split_name]
        history = split.history[row, : split.history_len[row]].tolist()
        users.append(
            user_text(split_name, row, int(split.users[row]), history, int(split.target[row]), dataset, item_sids)
        )
    return items, users
