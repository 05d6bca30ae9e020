"""(prompt, target) text for every SFT task, and the prompts eval and RL reuse.

Wording follows MiniOneRec / LC-Rec / SIDReasoner (typos fixed) so results stay
comparable. Items are named by their SID string (e.g. `<a_1><b_2><c_3>`), given
per item id as `item_sids`, built from the SID array by `sid_strings`.

Item-level tasks (1, 2, 7) belong to the train mixture only; sequence tasks read
the samples of the split they are built for, so valid/test examples never leak
into training. Tasks 7, 8 and stage-2 reasoning read the teacher corpus.

Prompt styles: "chat" is the papers' instruction wording, one user turn per
example; "papers" is the papers' exact wording, a system turn and a user turn
per task, and their different eval prompt (`sidjax.data.papers_wording`);
"sid_sequence" (a
model trained from scratch on SIDs alone) writes a history as its SIDs back to
back, so the next item is simply the sequence's continuation. Only that style
has the `sidseq` task: a user's whole train sequence with the loss on every
item after the first (the same next-item targets as task 5's windows, each
prefix encoded once instead of once per window). Tasks 7 and 8 (the teacher's item
and user narratives) are plain language-model text in every chat style, as in
SIDReasoner: no prompt, the loss on the whole text.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sidjax.data import papers_wording
from sidjax.data.corpus import ITEMS_FILE, USERS_FILE, Corpus, UserText
from sidjax.data.dataset import RecDataset, Split
from sidjax.data.task_names import (
    TITLE2SID,
    SID2TITLE,
    SIDHIS2TITLE,
    TITLEHIS2TITLE,
    SIDHIS2SID,
    TITLEHIS2SID,
    USER_NARRATIVE,
    SIDSEQ,
    REASONING,
    PROMPT_STYLES,
    PAPERS_STYLE,
    CHAT_STYLES,
    SID_SEQUENCE_STYLE,
    TASKS,
    ITEM_TASKS,
    CORPUS_TASKS,
    SEQUENCE_ONLY_TASKS,
    CHAT_ONLY_TASKS,
    REPLAY,
)
from sidjax.sid.codes import sid_string
from sidjax.utils.errors import DataError

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclasses.dataclass(frozen=True)
class Example:
    """One supervised example: earlier chat turns (replay only), the user turn, the answer."""

    task: str
    prompt: str
    target: str
    context: tuple[tuple[str, str], ...] = ()  # (role, content) turns before `prompt` (a system turn, replay)
    plain: bool = False  # plain language-model text: no prompt, no chat turns, the loss on all of `target`
    items: tuple[int, ...] = ()  # sidseq: the item ids its SIDs spell, prompt then target (soft targets align on them)


# ---------------------------------------------------------------- SID strings


def sid_strings(sids: np.ndarray) -> list[str]:
    """One SID string per item id, in the token format owned by `sidjax.sid.codes`."""
    return [sid_string(row) for row in np.asarray(sids).tolist()]


def _quoted(titles: Sequence[str]) -> str:
    return ", ".join(f'"{t}"' for t in titles)


# ---------------------------------------------------------------- prompts


def sid_history_prompt(history_sids: Sequence[str], style: str = "chat") -> str:
    """Task 5 (SID history -> next SID): the prompt SFT, eval and RL all share."""
    if style == "sid_sequence":
        return "".join(history_sids)
    return (
        f"The user has interacted with items {', '.join(history_sids)} in chronological order. "
        "Can you predict the next possible item that the user may expect?"
    )


def reasoning_prompt(history_sids: Sequence[str]) -> str:
    """Stage-2 prompt: the main task, asking for step-by-step reasoning before the SID."""
    return (
        f"The user has interacted with items {', '.join(history_sids)} in chronological order. "
        "Can you predict the next possible item that the user may expect? "
        f"Think step by step about the user's preferences inside {THINK_OPEN} {THINK_CLOSE}, "
        "then answer with the item."
    )


def reasoning_target(reasoning: str, target_sid: str) -> str:
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{target_sid}"


def title2sid_prompt(title: str) -> str:
    return f'Which item has the title "{title}"?'


def sid2title_prompt(sid: str) -> str:
    return f'What is the title of item "{sid}"?'


def sidhis2title_prompt(history_sids: Sequence[str]) -> str:
    return (
        f"The user has interacted with items {', '.join(history_sids)} in chronological order. "
        "Can you predict the title of the next item that the user may expect?"
    )


def titlehis2title_prompt(history_titles: Sequence[str]) -> str:
    return (
        f"The user has interacted with the following items in chronological order: {_quoted(history_titles)}. "
        "Can you predict the title of the next item that the user may expect?"
    )


def titlehis2sid_prompt(history_titles: Sequence[str]) -> str:
    return (
        f"Given the title sequence of the user's historical interactive items: {_quoted(history_titles)}, "
        "can you recommend a suitable next item for the user?"
    )


_CHAT_PROMPTS = {
    TITLE2SID: title2sid_prompt,
    SID2TITLE: sid2title_prompt,
    SIDHIS2TITLE: sidhis2title_prompt,
    TITLEHIS2TITLE: titlehis2title_prompt,
    SIDHIS2SID: sid_history_prompt,
    TITLEHIS2SID: titlehis2sid_prompt,
    REASONING: reasoning_prompt,
}
_PAPERS_PROMPTS = {
    TITLE2SID: papers_wording.title2sid,
    SID2TITLE: papers_wording.sid2title,
    SIDHIS2TITLE: papers_wording.sidhis2title,
    TITLEHIS2TITLE: papers_wording.titlehis2title,
    SIDHIS2SID: papers_wording.sidhis2sid,
    TITLEHIS2SID: papers_wording.titlehis2sid,
    REASONING: papers_wording.reasoning,
}


def _example(task: str, style: str, prompt_input, target: str) -> Example:
    """`task`'s example in a chat style: its prompt (and, in the papers' wording, their system turn)."""
    if style == PAPERS_STYLE:
        return Example(task, _PAPERS_PROMPTS[task](prompt_input), target, (("system", papers_wording.SYSTEM[task]),))
    return Example(task, _CHAT_PROMPTS[task](prompt_input), target)


def item_title_prompt(sid: str, style: str) -> Example:
    """Task 2's prompt (the title of the item with SID `sid`) in a chat style, the target left empty."""
    if style not in CHAT_STYLES:
        raise ValueError(f"the item-title task needs a chat prompt style {CHAT_STYLES}, got '{style}'")
    return _example(SID2TITLE, style, sid, "")


def next_item_prompt(history_sids: Sequence[str], style: str, mode: str) -> Example:
    """The prompt eval and RL ask with (the target left empty): task 5's, or stage 2's in reasoning mode.

    The papers evaluate direct mode with a prompt of its own (`papers_wording.direct_eval`).
    """
    if style == SID_SEQUENCE_STYLE:
        return Example(SIDHIS2SID, sid_history_prompt(history_sids, style), "")
    if style == PAPERS_STYLE and mode == "direct":
        return Example(SIDHIS2SID, papers_wording.direct_eval(history_sids), "",
                       (("system", papers_wording.SYSTEM[SIDHIS2SID]),))
    return _example(SIDHIS2SID if mode == "direct" else REASONING, style, history_sids, "")


# ---------------------------------------------------------------- the mixture


@dataclasses.dataclass(frozen=True)
class TaskMixture:
    """Which tasks a stage trains on and how many samples each contributes.

    `tasks[task]`: -1 = all samples, 0 = task off, n = at most n (a seeded random subset).
    `replay_path`: optional JSONL of general-instruction chats mixed in (train only).
    `recent_train_samples`: > 0 makes the sequence tasks read only the train split's N most
    recent samples (a fine-tune on the period closest to valid/test); item tasks are unaffected.
    """

    tasks: Mapping[str, int]
    task_seed: int
    replay_path: str
    replay_max_samples: int
    recent_train_samples: int

    def enabled(self) -> tuple[str, ...]:
        return tuple(t for t in TASKS if self.tasks.get(t, 0) != 0)

    def needs_corpus(self) -> bool:
        return any(t in CORPUS_TASKS for t in self.enabled())


def _subset(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    if cap < 0 or cap >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def _item_examples(task: str, dataset: RecDataset, item_sids: Sequence[str], corpus: Corpus | None,
                   style: str) -> list[Example]:
    titles = dataset.titles()
    taught = dataset.domain_items().tolist()  # a view of some domains of a mix teaches their items only
    if task == TITLE2SID:
        return [_example(task, style, titles[i], item_sids[i]) for i in taught]
    if task == SID2TITLE:
        counts: dict[str, int] = {}
        for s in item_sids:
            counts[s] = counts.get(s, 0) + 1
        # A SID shared by several items has no single title to answer with.
        return [_example(task, style, item_sids[i], titles[i]) for i in taught if counts[item_sids[i]] == 1]
    out, kept = [], set(taught)
    for i in sorted(corpus.items):
        text = corpus.items[i]
        if not 0 <= i < dataset.num_items or text.sid != item_sids[i]:
            raise DataError(
                corpus.path / ITEMS_FILE,
                f"item {i} with SID {text.sid} is not in this dataset's SID table (rerun the teacher stage)",
            )
        if i in kept:
            out.append(Example(task, "", text.narrative, plain=True))
    return out


def _user_records(split_name: str, dataset: RecDataset, corpus: Corpus) -> list[tuple[int, UserText]]:
    """(row, record) of the corpus records of one split, in row order, checked against the dataset's samples.

    In a view of some domains (`mix.restrict`) a record keeps the row of its sample in the view,
    and records of the other domains' samples are left out.
    """
    split = dataset.splits[split_name]
    records = sorted((k[1], v) for k, v in corpus.users.items() if k[0] == split_name)
    view_row = None
    if dataset.source_rows is not None:
        view_row = {int(whole): row for row, whole in enumerate(dataset.source_rows[split_name])}
    out = []
    for index, rec in records:
        row = index if view_row is None else view_row.get(index)
        if row is None:
            continue
        if row >= len(split) or int(split.target[row]) != rec.target or int(split.users[row]) != rec.user:
            raise DataError(
                corpus.path / USERS_FILE,
                f"user record ({split_name}, {index}) does not match the dataset's sample there "
                "(the corpus was written for other data: rerun the teacher stage)",
            )
        out.append((row, rec))
    return out


def _sample_example(task: str, history: list[int], target: int, item_sids: Sequence[str], titles: Sequence[str],
                    rec: UserText | None, style: str) -> Example:
    h_sids = [item_sids[h] for h in history]
    if task == SIDHIS2SID and style == SID_SEQUENCE_STYLE:
        return Example(task, sid_history_prompt(h_sids, style), item_sids[target])
    if task == USER_NARRATIVE:
        return Example(task, "", rec.narrative, plain=True)
    if task == REASONING:
        return _example(task, style, h_sids, reasoning_target(rec.reasoning, item_sids[target]))
    history_input = h_sids if task in (SIDHIS2SID, SIDHIS2TITLE) else [titles[h] for h in history]
    answer = item_sids[target] if task in (SIDHIS2SID, TITLEHIS2SID) else titles[target]
    return _example(task, style, history_input, answer)


def _sequence_examples(split: Split, item_sids: Sequence[str]) -> list[Example]:
    """SIDSEQ: each user's samples folded into as few sequences as cover every target once.

    A sample whose history + target is another sample's history is a prefix of it; a
    sample no other extends, whose every prefix is a sample of its own, becomes one
    sequence from the user's first item (the loss then covers all those targets). What
    is left (windows that slid once histories hit their length cap) stays history ->
    target, so no target is counted twice and none is lost.
    """
    rows = range(len(split))
    histories = [tuple(split.history[r, : split.history_len[r]].tolist()) for r in rows]
    users = split.users.tolist()
    targets = split.target.tolist()
    row_of = {(users[r], histories[r] + (targets[r],)): r for r in rows}
    extended = {(users[r], histories[r]) for r in rows}
    covered = [False] * len(split)
    out: list[Example] = []
    for r in rows:
        sequence = histories[r] + (targets[r],)
        if (users[r], sequence) in extended:
            continue
        chain = [row_of.get((users[r], sequence[: k + 1])) for k in range(1, len(sequence))]
        if all(c is not None and not covered[c] for c in chain):  # a shared prefix is covered once
            for c in chain:
                covered[c] = True
            out.append(Example(SIDSEQ, item_sids[sequence[0]], "".join(item_sids[i] for i in sequence[1:]),
                               items=sequence))
    for r in rows:
        if not covered[r]:
            prompt = sid_history_prompt([item_sids[i] for i in histories[r]], "sid_sequence")
            out.append(Example(SIDSEQ, prompt, item_sids[targets[r]], items=histories[r] + (targets[r],)))
    return out


def _split_examples(task: str, dataset: RecDataset, item_sids: Sequence[str], split_name: str, corpus: Corpus | None,
                    style: str, recent: int = 0) -> list[Example]:
    split = dataset.splits[split_name]
    first = len(split) - recent if 0 < recent < len(split) else 0  # the rows read: first..end
    if task == SIDSEQ:
        return _sequence_examples(split.latest(recent), item_sids)
    titles = dataset.titles()
    if task in (USER_NARRATIVE, REASONING):
        rows = [(row, rec) for row, rec in _user_records(split_name, dataset, corpus) if row >= first]
    else:
        rows = [(i, None) for i in range(first, len(split))]
    return [
        _sample_example(task, split.history[i, : split.history_len[i]].tolist(), int(split.target[i]), item_sids, titles,
                        rec, style)
        for i, rec in rows
    ]


def task_examples(
    task: str,
    dataset: RecDataset,
    item_sids: Sequence[str],
    split: str,
    *,
    cap: int = -1,
    corpus: Corpus | None = None,
    rng: np.random.Generator | None = None,
    style: str = "chat",
    recent: int = 0,
) -> list[Example]:
    """All (or `cap` seeded-random, in order) examples of one task for one split.

    Item tasks (1, 2, 7) exist for the train split only; the others read that split's samples
    (its `recent` latest ones when > 0).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}' (known: {', '.join(TASKS)})")
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style '{style}' is not one of {PROMPT_STYLES}")
    if task in SEQUENCE_ONLY_TASKS and style != SID_SEQUENCE_STYLE:
        raise ValueError(f"task '{task}' needs the 'sid_sequence' prompt style (config model.prompt_style)")
    if task in CHAT_ONLY_TASKS and style == SID_SEQUENCE_STYLE:
        raise ValueError(f"task '{task}' needs a chat prompt style: a SID-sequence model has no reasoning prompt")
    if len(item_sids) != dataset.num_items:
        raise ValueError(f"item_sids has {len(item_sids)} entries but the dataset has {dataset.num_items} items")
    if task in CORPUS_TASKS and corpus is None:
        raise ValueError(f"task '{task}' needs the teacher corpus (run the 'teacher' stage first)")
    if task in ITEM_TASKS:
        examples = _item_examples(task, dataset, item_sids, corpus, style) if split == "train" else []
    else:
        examples = _split_examples(task, dataset, item_sids, split, corpus, style, recent)
    rng = rng if rng is not None else np.random.default_rng(0)
    return [examples[i] for i in _subset(len(examples), cap, rng)]


def build_mixture(
    mixture: TaskMixture,
    dataset: RecDataset,
    item_sids: Sequence[str],
    split: str,
    corpus: Corpus | None = None,
    style: str = "chat",
) -> list[Example]:
    """Every enabled task's examples for `split` (+ replay on train), shuffled with the mixture seed."""
    if mixture.needs_corpus() and corpus is None:
        missing = [t for t in mixture.enabled() if t in CORPUS_TASKS]
        raise ValueError(f"tasks {missing} need the teacher corpus: add the 'teacher' stage before this one")
    out: list[Example] = []
    for k, task in enumerate(mixture.enabled()):
        rng = np.random.default_rng([mixture.task_seed, k])
        recent = mixture.recent_train_samples if split == "train" else 0
        out.extend(task_examples(task, dataset, item_sids, split, cap=mixture.tasks[task], corpus=corpus, rng=rng,
                                 style=style, recent=recent))
    if mixture.replay_path and split == "train":
        replay = load_replay(mixture.replay_path)
        rng = np.random.default_rng([mixture.task_seed, len(TASKS)])
        out.extend(replay[i] for i in _subset(len(replay), mixture.replay_max_samples, rng))
    order = np.random.default_rng([mixture.task_seed, len(TASKS) + 1]).permutation(len(out))
    return [out[i] for i in order]


def task_counts(examples: Sequence[Example]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in examples:
        counts[e.task] = counts.get(e.task, 0) + 1
    return counts


# ---------------------------------------------------------------- general-instruction replay

_ROLES = ("system", "user", "assistant")


def load_replay(path: str | Path) -> list[Example]:
    """A JSONL of chats, one `{"messages": [{"role": ..., "content": ...}, ...]}` per line.

    The last message must be the assistant's answer (the loss target) and the one
    before it a user turn; earlier turns become context.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "replay file not found")
    out = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"not valid JSON ({e.msg})", line_no) from None
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or len(messages) < 2:
                raise DataError(path, "expected an object with a 'messages' list of at least 2 turns", line_no)
            turns = []
            for j, m in enumerate(messages):
                if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
                    raise DataError(path, f"messages[{j}] must be {{'role': one of {_ROLES}, 'content': str}}", line_no)
                if not m["content"].strip():
                    raise DataError(path, f"messages[{j}] has empty content", line_no)
                turns.append((m["role"], m["content"]))
            if turns[-1][0] != "assistant" or turns[-2][0] != "user":
                raise DataError(path, "the last two messages must be a user turn then the assistant's answer", line_no)
            out.append(Example(REPLAY, turns[-2][1], turns[-1][1], tuple(turns[:-2])))
    if not out:
        raise DataError(path, "replay file has no chats")
    return out
