"""The papers' own task wording (`model.prompt_style = "papers"`), for fidelity runs.

SIDReasoner's data code (MiniOneRec's, extended) writes each task as a system turn (a shared
preamble plus the task's instruction) and a user turn, and evaluates the main task with a
different user prompt than it trains with. Typos of the originals are fixed; their domain
words ("him", "played") are kept. Tasks 7 and 8 have no prompt in any style: they are plain
language-model text (`sidjax.data.tasks`).
"""
from __future__ import annotations

from typing import Sequence

from sidjax.data.task_names import REASONING, SID2TITLE, SIDHIS2SID, SIDHIS2TITLE, TITLE2SID, TITLEHIS2SID, TITLEHIS2TITLE

PREAMBLE = ("Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.")
_RECOMMEND = "Can you recommend the next item for the user based on their interaction history?"
SYSTEM = {
    SIDHIS2SID: f"{PREAMBLE}\nCan you predict the next possible item that the user may expect?",
    TITLE2SID: f"{PREAMBLE}\nAnswer the question about item identification.",
    SID2TITLE: f"{PREAMBLE}\nAnswer the question about item identification.",
    SIDHIS2TITLE: f"{PREAMBLE}\n{_RECOMMEND}",
    TITLEHIS2TITLE: f"{PREAMBLE}\nGiven a list of items the user recently enjoyed, please write a new item that the "
                    "user may buy.",
    TITLEHIS2SID: f"{PREAMBLE}\nBased on the user's historical interaction with item titles, predict the semantic ID "
                  "of the next item they may expect.",
    REASONING: f"{PREAMBLE}\n{_RECOMMEND}",
}


def _sids(history_sids: Sequence[str]) -> str:
    return ", ".join(history_sids)


def _titles(history_titles: Sequence[str]) -> str:
    return ", ".join(f'"{t}"' for t in history_titles)


def sidhis2sid(history_sids: Sequence[str]) -> str:
    return (f"The user has interacted with items {_sids(history_sids)} in chronological order. "
            "Can you predict the next possible item that the user may expect?")


def direct_eval(history_sids: Sequence[str]) -> str:
    """The main task as the papers evaluate it (their training prompt is `sidhis2sid`)."""
    return ("Can you predict the next possible item the user may expect, given the following chronological "
            f"interaction history: {_sids(history_sids)}")


def reasoning(history_sids: Sequence[str]) -> str:
    """Stage 2's prompt, the same in training and in reasoning-mode eval."""
    return (f"The user has sequentially interacted with items {_sids(history_sids)}. Can you recommend the next "
            "item for him? Let's think step by step before making recommendation. Directly output the item SID "
            "after thinking.")


def title2sid(title: str) -> str:
    return f"Which item has the title: {title}?"


def sid2title(sid: str) -> str:
    return f'What is the title of item "{sid}"?'


def sidhis2title(history_sids: Sequence[str]) -> str:
    return (f"The user has sequentially interacted with items {_sids(history_sids)}. Can you recommend the next "
            "item for him? Tell me the title of the item?")


def titlehis2title(history_titles: Sequence[str]) -> str:
    return f"The user has played the following items before: {_titles(history_titles)}"


def titlehis2sid(history_titles: Sequence[str]) -> str:
    return (f"The user has interacted with the following items in chronological order: {_titles(history_titles)}. "
            "Can you predict the next item the user may expect?")
