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


def cited_sids(text: str) -> list[str]:
    return _SID_RUN.findall(text)


def has_loop(words: Sequence[str], n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> bool:
    counts = collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(c >= repeats for c in counts.values())


def assess(text: str, history_sids: Sequence[str], history_titles: Sequence[str], catalogue: set[str],
           top_sid: str) -> dict[str, Any]:
    """One reasoning's measures (see the module docstring); `catalogue`: every item's SID string."""
    closed = THINK_CLOSE in text
    body = text.split(THINK_CLOSE, 1)[0]
    words = body.split()
    cited = cited_sids(body)
    lowered = body.lower()
    grounded = (any(s in cited for s in history_sids)
                or any(t.strip() and t.strip().lower() in lowered for t in history_titles))
    return {
        "closed": closed,
        "words": len(words),
        "has_text": sum(any(c.isalpha() for c in _SID_RUN.sub("", w)) for w in words) >= MIN_TEXT_WORDS,
        "loop": has_loop(words),
        "grounded": grounded,
        "cited_valid": all(s in catalogue for s in cited) if cited else None,
        "consistent": cited[-1] == top_sid if cited else None,
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
    skeletons = [r["skeleton"] for r in rows if "skeleton" in r]  # absent from records of older evals
    if skeletons:
        out["reasoning/distinct"] = len(set(skeletons)) / len(skeletons)
    return out
