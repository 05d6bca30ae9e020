"""How good a reasoning is, measured from its text: closure, length, loops, grounding, cited SIDs.

Per sample (`assess`), written beside it in the eval's JSONL, and as shares over a split
(`summarize`) in its metrics. A cited SID is a run of SID tokens (`<a_1><b_2><c_3>`) in the text.

- closed: the model wrote `</think>` itself (a thought cut at the budget gets one appended later).
- words: whitespace-separated words before `</think>` (a cited SID is one word); has_text: at
  least `MIN_TEXT_WORDS` of them hold a letter outside SID tokens (a thought that is only a SID,
  or only numbers, is no reasoning).
- loop: some 4-gram of words occurs three or more times.
- grounded: the text cites a history item, by its SID or its title (case-insensitive). Under
  `eval.citations = "history"` every cited SID is a history item's by construction, so there it
  only says that the thought cites one at all.
- cited_valid: every SID it cites is a real item's (None: it cites none).
- consistent: the last SID it cites is the one ranked first after it (None: it cites none).
- described / kind_right: of the real items the text cites, how many sit in a clause (the text between
  a sentence's `.`, `;` and line breaks) that names some item kind, and how many in a clause that names their own
  (`ItemKinds`; None without it). Over a split, `kind_right` is right / described: whether the thought
  says what the items it cites are, not just that it cites them.
- skeleton: a digest of the text before `</think>` with its SIDs and numbers masked and its spaces
  collapsed; over a split, `distinct` is the share of thoughts whose skeleton no earlier one had. A
  model that writes one text for everyone, its SIDs aside, scores 1 / users however well it cites.
"""
from __future__ import annotations

import collections
import hashlib
import re
from typing import Any, Iterable, Mapping, Sequence

from sidjax.data.tasks import THINK_CLOSE

_SID_RUN = re.compile(r"(?:<[a-z]_\d+>)+")
_NUMBER = re.compile(r"\d+")
MIN_TEXT_WORDS = 3
LOOP_NGRAM = 4
LOOP_REPEATS = 3


_CLAUSE_END = re.compile(r"\.(?=\s|$)|[;\n]")  # not the dot of "1.75"


class ItemKinds:
    """What each SID's items are (e.g. `sidjax.teacher.evidence.item_kinds`), and where a text names a kind."""

    def __init__(self, item_sids: Sequence[str], kinds: Sequence[str]):
        if len(item_sids) != len(kinds):
            raise ValueError(f"{len(item_sids)} item SIDs but {len(kinds)} item kinds")
        by_sid: dict[str, set[str]] = collections.defaultdict(set)
        for sid, kind in zip(item_sids, kinds):
            by_sid[sid].add(kind.lower())
        self.by_sid = dict(by_sid)
        vocabulary = sorted({k.lower() for k in kinds}, key=len, reverse=True)  # longest first: "duct tape"
        self._any = whole_words(vocabulary)
        self._own = {kind: whole_words([kind]) for kind in vocabulary}

    def counts(self, body: str) -> tuple[int, int]:
        """(cited real items in a clause that names a kind, those whose clause names their own kind)."""
        described = right = 0
        for clause in _CLAUSE_END.split(body):
            sids = [s for s in cited_sids(clause) if s in self.by_sid]
            words = _SID_RUN.sub(" ", clause)
            if sids and self._any.search(words):
                described += len(sids)
                right += sum(any(self._own[k].search(words) for k in self.by_sid[s]) for s in sids)
        return described, right


def whole_words(phrases: Sequence[str]) -> re.Pattern:
    """Any of `phrases` as whole words (case-insensitive; a hyphen joins words: "tape" is not in "tape-measure")."""
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(p) for p in phrases) + r")(?![\w-])", re.IGNORECASE)


def cited_sids(text: str) -> list[str]:
    return _SID_RUN.findall(text)


def has_loop(words: Sequence[str], n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> bool:
    counts = collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(c >= repeats for c in counts.values())


def assess(text: str, history_sids: Sequence[str], history_titles: Sequence[str], catalogue: set[str],
           top_sid: str, kinds: ItemKinds | None = None) -> dict[str, Any]:
    """One reasoning's measures (see the module docstring); `catalogue`: every item's SID string."""
    closed = THINK_CLOSE in text
    body = text.split(THINK_CLOSE, 1)[0]
    words = body.split()
    cited = cited_sids(body)
    lowered = body.lower()
    grounded = (any(s in cited for s in history_sids)
                or any(t.strip() and t.strip().lower() in lowered for t in history_titles))
    described, kind_right = kinds.counts(body) if kinds is not None else (None, None)
    return {
        "closed": closed,
        "words": len(words),
        "has_text": sum(any(c.isalpha() for c in _SID_RUN.sub("", w)) for w in words) >= MIN_TEXT_WORDS,
        "loop": has_loop(words),
        "grounded": grounded,
        "cited_valid": all(s in catalogue for s in cited) if cited else None,
        "consistent": cited[-1] == top_sid if cited else None,
        "described": described,
        "kind_right": kind_right,
        "skeleton": skeleton(body),
    }


def skeleton(body: str) -> str:
    """What is left of a thought once its SIDs and numbers are masked, as a short digest."""
    masked = " ".join(_NUMBER.sub("#", _SID_RUN.sub("<sid>", body)).split())
    return hashlib.sha1(masked.encode("utf-8")).hexdigest()[:12]


def summarize(assessed: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Shares over a split (`reasoning/<measure>`); cited_valid / consistent over the samples that cite a SID,
    left out when none does."""
    rows = list(assessed)
    if not rows:
        return {}
    out = {"reasoning/mean_words": sum(r["words"] for r in rows) / len(rows),
           "reasoning/citing": sum(r["cited_valid"] is not None for r in rows) / len(rows)}
    for key in ("closed", "has_text", "loop", "grounded", "cited_valid", "consistent"):
        known = [r[key] for r in rows if r[key] is not None]
        if known:
            out[f"reasoning/{key}"] = sum(known) / len(known)
    described = sum(r.get("described") or 0 for r in rows)  # absent from records of older evals
    if described:
        out["reasoning/kind_right"] = sum(r.get("kind_right") or 0 for r in rows) / described
    skeletons = [r["skeleton"] for r in rows if "skeleton" in r]  # absent from records of older evals
    if skeletons:
        out["reasoning/distinct"] = len(set(skeletons)) / len(skeletons)
    return out
