"""The offline template teacher: the same corpus files, written from item metadata with no network.

It is the demo default, deterministic, and every record is marked
`source: "template"` (and the manifest `template: true`): these texts exercise
the pipeline, they are not the enrichment an LLM teacher would write.

The user-side reasoning follows GREAM's curriculum (behavioural evidence, latent
preference, intent, recommendation, the history that matters), each step read off
data: item kinds and brands from the metadata, kind-to-kind counts from the train
split (`sidjax.teacher.evidence`). It obeys the LLM teacher's rules: items are named
only by their SIDs, the reasoning never names the target, user narratives recite the
history by SIDs and end with the target's.
"""
from __future__ import annotations

import re
from typing import Sequence

from sidjax.data.corpus import ItemText, UserText
from sidjax.data.dataset import Item, RecDataset
from sidjax.teacher.evidence import Evidence
from sidjax.teacher.prompts import description_text, repeats
from sidjax.utils.progress import progress

SOURCE = "template"
RECENT = 3  # history items the evidence step describes, and the most the last step keeps


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


def _a(kind: str) -> str:
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _from(brand: str) -> str:
    return f" from {brand}" if brand else ""


def _listed(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def item_text(item_id: int, item: Item, sid: str, kind: str, brand: str) -> ItemText:
    description = _first_sentences(description_text(item), 400)
    analysis = f"Title: {item.title}\nKind: {kind}"
    if brand:
        analysis += f"\nBrand: {brand}"
    if item.categories:
        analysis += f"\nCategories: {item.categories}"
    if description:
        analysis += f"\nDescription: {description}"
    narrative = f"Item {sid} is {_a(kind)}{_from(brand)}."
    if item.categories:
        narrative += f" {sid} is listed under {item.categories}."
    if description:
        narrative += f" About {sid}: {_replace_title(description, item.title, sid)}"
    return ItemText(item=item_id, sid=sid, analysis=analysis, narrative=narrative, source=SOURCE)


def _describe_recent(history: Sequence[int], evidence: Evidence, item_sids: Sequence[str]) -> str:
    """The latest (up to `RECENT`) distinct items grouped by kind, the kind first (with its brands), then
    its SIDs; the groups in order of their latest item.

    The kind comes once, before its items. With the kind after each SID, SmolLM2 wrote one clause per
    item instead of the group, the same four words up to three times: 43 % of its thoughts looped by
    the eval's measure (stop 41); 5.7 % in this form (stop 42, docs/results/log.md), where it still often
    writes a clause per item, which the measure sees only when kind and brand fill a 4-gram.
    """
    recent = list(dict.fromkeys(reversed(history)))[:RECENT]
    groups: dict[str, list[int]] = {}
    for i in recent:
        groups.setdefault(evidence.kinds[i], []).append(i)
    parts = []
    for kind, members in groups.items():
        brands = list(dict.fromkeys(evidence.brands[i] for i in members if evidence.brands[i]))
        listed = ", ".join(item_sids[i] for i in members)
        parts.append(f"{kind}{_from(_listed(brands) if brands else '')} ({listed})")
    return "; ".join(parts)


def _intent(last_kind: str, next_kind: str, evidence: Evidence) -> str:
    needs = f"more {next_kind}" if next_kind == last_kind else _a(next_kind)
    seen, after = evidence.transition(last_kind, next_kind)
    if not after:
        return f"Intent: next the user needs {needs}."
    return (f"Intent: next the user needs {needs}; in the training data {_a(next_kind)} came next after {_a(last_kind)} "
            f"in {seen} of {after} purchases.")


def _guessed_next(history: Sequence[int], evidence: Evidence) -> tuple[str, str]:
    """The kind that most often followed the last item's kind in train, and the latest brand the user bought of it."""
    kind = evidence.likely_next_kind(evidence.kinds[history[-1]])
    brands = [evidence.brands[h] for h in history if evidence.kinds[h] == kind and evidence.brands[h]]
    return kind, brands[-1] if brands else ""


def user_text(split: str, index: int, user: int, history: Sequence[int], target: int, dataset: RecDataset,
              item_sids: Sequence[str], evidence: Evidence, explain_target: bool = True) -> UserText:
    """GREAM's curriculum: evidence -> preference -> intent -> recommendation -> the history that matters.

    Items are named only by SID. With `explain_target` (SIDReasoner's teacher, which is given the true next
    item) steps 3-5 describe the target (its kind and brand), never naming it, unless the history already holds
    it (the same SID or title): then buying it again is the recommendation. Without it they describe the kind
    that most often followed the last item's kind in train, and the user's latest brand of that kind: the
    reasoning is then a function of the history and train counts alone, one the model can write at inference.
    """
    common_kind, common_brand = evidence.common_kind(history), evidence.common_brand(history)
    if explain_target:
        kind, brand = evidence.kinds[target], evidence.brands[target]
        again = [history[k] for k in repeats([dataset.items[h].title for h in history], [item_sids[h] for h in history],
                                             dataset.items[target].title, item_sids[target])]
    else:
        kind, brand = _guessed_next(history, evidence)
        again = []
    preference = f"Preference: the user mostly buys {common_kind}"
    preference += f" and trusts {common_brand}." if common_brand else ", choosing by function rather than brand."
    recommendation = (f"Recommendation: buy {item_sids[again[-1]]} again." if again
                      else f"Recommendation: {_a(kind)}{_from(brand)}.")
    matter = [h for h in history if evidence.kinds[h] == kind or (brand and evidence.brands[h] == brand)]
    key = list(dict.fromkeys(item_sids[h] for h in reversed(matter or history[-1:])))[:RECENT][::-1]
    steps = [
        f"Evidence: the recent items are {_describe_recent(history, evidence, item_sids)}.",
        preference,
        _intent(evidence.kinds[history[-1]], kind, evidence),
        recommendation,
        f"Items that matter: {', '.join(key)}.",
    ]
    reasoning = "\n".join(f"{k}. {s}" for k, s in enumerate(steps, 1))
    h_sids = [item_sids[h] for h in history]
    narrative = f"The user interacted with {', '.join(h_sids)} in this order."
    narrative += f" They mostly buy {common_kind}{_from(common_brand)}."
    narrative += (f" The latest item, {h_sids[-1]}, is {_a(evidence.kinds[history[-1]])};"
                  f" next they need {_a(evidence.kinds[target])}."
                  f" The next item is {item_sids[target]}.")
    return UserText(split=split, index=index, user=user, target=target, reasoning=reasoning, narrative=narrative,
                    source=SOURCE)


def write_offline(
    dataset: RecDataset, item_sids: Sequence[str], item_ids: Sequence[int], user_rows: Sequence[tuple[str, int]],
    explain_target: bool = True,
) -> tuple[list[ItemText], list[UserText]]:
    """Template texts for `item_ids` and for the samples `(split, row)` in `user_rows` (`user_text`'s
    `explain_target`)."""
    evidence = Evidence.from_train(dataset)
    items = [item_text(i, dataset.items[i], item_sids[i], evidence.kinds[i], evidence.brands[i]) for i in item_ids]
    users = []
    for split_name, row in progress(user_rows, desc="template teacher users", unit="sample"):
        split = dataset.splits[split_name]
        history = split.history[row, : split.history_len[row]].tolist()
        users.append(user_text(split_name, row, int(split.users[row]), history, int(split.target[row]), dataset,
                               item_sids, evidence, explain_target))
    return items, users
