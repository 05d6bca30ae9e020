"""The teacher's two-step prompts (item- and user-centric) and the checks on its answers.

As SIDReasoner's teacher: Item: (1) a structured analysis of the product from its
title, description, categories and brand -> (2) a narrative of at least
`ITEM_NARRATIVE_SENTENCES` sentences naming the product only by its SID. User:
(1) an analyst who sees the history (SIDs with their descriptions) and the true
next item explains why it follows, naming products only by their SIDs and never
naming the next one (this is the stage-2 reasoning path) -> (2) a narrative
reciting the history by SIDs that ends with the target SID. Without the target
(`teacher.explain_target = False`) the analyst sees the history only and reasons
to the kind of product needed next, a thought the student can write at
inference; the narrative still ends with the target. Every answer is checked; a
failed check's reason is sent back to the model as a re-ask.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Sequence

from sidjax.data.dataset import Item
from sidjax.utils.literal import literal_eval

Messages = list[dict[str, str]]
# A check returns None when the answer is acceptable, else the reason to send back.
Check = Callable[[str], "str | None"]

SYSTEM = "You are an expert e-commerce analyst who writes clear, factual English."
ITEM_NARRATIVE_SENTENCES = 10
_ANALYSIS_SECTIONS = ("Product type", "Key features", "Use cases", "Target customers", "Brand and positioning")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_THINK_BLOCK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Accepted answer lengths in characters (config `teacher.min_chars` / `max_chars`)."""

    min_chars: int
    max_chars: int


def clean_answer(text: str) -> str:
    """Drop a leading `<think>` block some reasoning servers put in the content, and outer space."""
    return _THINK_BLOCK.sub("", text, count=1).strip()


def description_text(item: Item, max_chars: int = 600) -> str:
    """The description as plain text (the papers' files store it as a stringified Python list)."""
    text = item.description.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parts = literal_eval(text)
        except (ValueError, SyntaxError):
            parts = [text]
        text = " ".join(str(p).strip() for p in parts if str(p).strip()) if isinstance(parts, list) else text
    text = re.sub(r"\s+", " ", text)
    return text[:max_chars].rsplit(" ", 1)[0] if len(text) > max_chars else text


def _metadata(item: Item) -> str:
    lines = [f"Title: {item.title}"]
    if item.brand:
        lines.append(f"Brand: {item.brand}")
    if item.categories:
        lines.append(f"Categories: {item.categories}")
    description = description_text(item)
    if description:
        lines.append(f"Description: {description}")
    return "\n".join(lines)


def _chat(user: str) -> Messages:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


# ---------------------------------------------------------------- item-centric


def item_analysis_messages(item: Item, bounds: Bounds) -> Messages:
    sections = "\n".join(f"{name}: ..." for name in _ANALYSIS_SECTIONS)
    return _chat(
        f"{_metadata(item)}\n\n"
        "Analyse this product from its title, description, categories and brand. Answer in this structure, "
        f"one short paragraph per heading:\n{sections}\n"
        f"({bounds.min_chars}-{bounds.max_chars} characters in all)."
    )


def item_narrative_messages(item: Item, sid: str, analysis: str, bounds: Bounds) -> Messages:
    return _chat(
        f"Here is an analysis of a product:\n\n{analysis}\n\n"
        f"Write a narrative of at least {ITEM_NARRATIVE_SENTENCES} sentences about this product in which it is "
        f"called only by its identifier {sid}: what it is, its features, how and by whom it is used. "
        f"Write {sid} every time you refer to the product and never use its title \"{item.title}\". "
        f"Plain prose, {bounds.min_chars}-{bounds.max_chars} characters."
    )


# ---------------------------------------------------------------- user-centric


def _history_lines(titles: Sequence[str], sids: Sequence[str]) -> str:
    return "\n".join(f"{k}. {s}: {t}" for k, (s, t) in enumerate(zip(sids, titles), 1))


def _described(item: Item, sid: str) -> str:
    details = "; ".join(p for p in (item.title, item.brand and f"brand {item.brand}", item.categories,
                                    description_text(item, 200)) if p)
    return f"{sid}: {details}"


def user_reasoning_messages(history: Sequence[Item], history_sids: Sequence[str], target: Item | None,
                            target_sid: str | None, bounds: Bounds) -> Messages:
    """The analyst's prompt; `target` None: the history alone, the next purchase left for it to reason to."""
    lines = "\n".join(f"{k}. {_described(item, sid)}" for k, (item, sid) in enumerate(zip(history, history_sids), 1))
    cite = (f"Refer to every product of the history only by its identifier (such as {history_sids[-1]}), "
            "never by its title.")
    if target is None:
        task = ("Reason step by step from the preferences and needs visible in the history to the kind of product "
                f"the customer will need next. {cite} Name the kind of product, not a particular product.")
    else:
        task = (f"The product they bought next was {_described(target, target_sid)}\n\n"
                "Explain step by step which preferences and needs visible in the history lead to that next "
                f"purchase. {cite} Reason as if you did not know the answer: do not name the "
                "next product, its identifier or its title; describe only the kind of product the customer needs.")
    return _chat(
        "A customer bought these products (known by identifiers), in this order:\n"
        f"{lines}\n\n{task} Plain prose, {bounds.min_chars}-{bounds.max_chars} characters."
    )


def user_narrative_messages(
    history_titles: Sequence[str],
    history_sids: Sequence[str],
    target_title: str,
    target_sid: str,
    reasoning: str,
    bounds: Bounds,
    analyst_saw_target: bool = True,
) -> Messages:
    analyst = ("An analyst explained the next purchase like this" if analyst_saw_target
               else "An analyst who saw only the history reasoned like this")
    return _chat(
        "Products are known by identifiers. A customer bought, in this order:\n"
        f"{_history_lines(history_titles, history_sids)}\n"
        f"and next bought {target_sid}: {target_title}.\n\n"
        f"{analyst}:\n\n{reasoning}\n\n"
        "Write a short narrative of this customer: recite the purchase history by identifiers in order, "
        "explain their preferences following the analysis, and recommend the next product. Refer to "
        f"every product only by its identifier, never by its title, and end with: The next item is {target_sid}. "
        f"Plain prose, {bounds.min_chars}-{bounds.max_chars} characters."
    )


# ---------------------------------------------------------------- checks


def _mentions(text: str, phrase: str) -> bool:
    return bool(phrase) and phrase.casefold() in text.casefold()


def _titles_named(text: str, titles: Sequence[str]) -> str | None:
    named = [t for t in dict.fromkeys(titles) if _mentions(text, t)]
    if named:
        return f"product titles appear (e.g. \"{named[0]}\"); refer to products only by their identifiers"
    return None


def _length(text: str, bounds: Bounds) -> str | None:
    if len(text) < bounds.min_chars:
        return f"the answer is too short ({len(text)} characters, at least {bounds.min_chars} needed)"
    if len(text) > bounds.max_chars:
        return f"the answer is too long ({len(text)} characters, at most {bounds.max_chars} allowed)"
    return None


def check_item_analysis(bounds: Bounds) -> Check:
    return lambda text: _length(text, bounds)


def sentence_count(text: str) -> int:
    return len(_SENTENCE_END.findall(text))


def check_item_narrative(item: Item, sid: str, bounds: Bounds, min_sentences: int = 0) -> Check:
    """The narrative names the item by SID, never by title; the LLM teacher's also has `min_sentences`."""
    def check(text: str) -> str | None:
        if sid not in text:
            return f"the identifier {sid} does not appear; refer to the product as {sid}"
        if _mentions(text, item.title):
            return f"the title \"{item.title}\" appears; refer to the product only as {sid}"
        if sentence_count(text) < min_sentences:
            return f"the narrative has {sentence_count(text)} sentences; write at least {min_sentences}"
        return _length(text, bounds)

    return check


def repeats(history_titles: Sequence[str], history_sids: Sequence[str], title: str, sid: str) -> list[int]:
    """Positions of the history items the next item repeats (the same SID, or the same title up to case)."""
    return [k for k, (t, s) in enumerate(zip(history_titles, history_sids))
            if s == sid or t.casefold() == title.casefold()]


def check_user_reasoning(history_titles: Sequence[str], history_sids: Sequence[str], target_title: str | None,
                         target_sid: str | None, bounds: Bounds) -> Check:
    """The analyst names history items by SID (at least one), never by title, and must not name the target,
    unless a history item has the same title or SID (then naming it is fair). `target_title` / `target_sid`
    None: the analyst was not shown the target, so a right guess is no leak."""
    shown = target_title is not None and target_sid is not None
    in_history = shown and bool(repeats(history_titles, history_sids, target_title, target_sid))

    def check(text: str) -> str | None:
        if shown and not in_history and (_mentions(text, target_title) or target_sid in text):
            return "the answer names the next product; describe the kind of product instead of naming it"
        titled = _titles_named(text, history_titles)
        if titled:
            return titled
        if not any(s in text for s in history_sids):
            return f"no product of the history is named; refer to them by their identifiers (e.g. {history_sids[-1]})"
        return _length(text, bounds)

    return check


def check_user_narrative(history_titles: Sequence[str], history_sids: Sequence[str], target_title: str, target_sid: str, bounds: Bounds) -> Check:
    def check(text: str) -> str | None:
        missing = [s for s in dict.fromkeys(history_sids) if s not in text]
        if missing:
            return f"the identifiers {', '.join(missing)} of the purchase history do not appear"
        if target_sid not in text:
            return f"the next product's identifier {target_sid} does not appear"
        titled = _titles_named(text, [*history_titles, target_title])
        if titled:
            return titled
        return _length(text, bounds)

    return check
