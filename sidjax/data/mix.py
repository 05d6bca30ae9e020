"""Several datasets as one (multi-domain training), and views of some of its domains (transfer).

`merge` concatenates the domains' catalogues (item ids offset, domain by domain, in the
order given), their users (ids offset the same way) and their splits, each domain split by
its own rule and history length. A sampling mixture resamples the train split so each domain
supplies its share of the train samples. The SIDs keep the domains apart: the `sids` stage
prefixes every SID with its item's domain (`sidjax.stages.sids`).

`restrict` is the view a stage entry with `domains` set sees: every item keeps its id (so the
SIDs, the vocabulary and the checkpoints line up across entries), but samples and item tasks
come from the chosen domains only.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from sidjax.data.dataset import SPLITS, RecDataset, Split


def _shift(split: Split, item_offset: int, user_offset: int, width: int) -> Split:
    history = np.full((len(split), width), -1, np.int32)
    real = split.history >= 0
    history[:, : split.history.shape[1]] = np.where(real, split.history + item_offset, -1)
    return Split(users=split.users + user_offset, history=history, history_len=split.history_len,
                 target=split.target + item_offset)


def _concat(parts: Sequence[Split]) -> Split:
    return Split(users=np.concatenate([p.users for p in parts]), history=np.concatenate([p.history for p in parts]),
                 history_len=np.concatenate([p.history_len for p in parts]),
                 target=np.concatenate([p.target for p in parts]))


def mixture_rows(sizes: Sequence[int], weights: Sequence[float], seed: int) -> list[np.ndarray]:
    """Per domain, the train rows (indices into its own split) that give it `weights`' share of the total.

    The total stays the domains' summed size. A domain asked for fewer rows than it has keeps a
    seeded subset; one asked for more repeats all of its rows, then a seeded subset. Rows stay in
    their split's order (time order), so `Split.latest` still means the latest.
    """
    total, weights = sum(sizes), np.asarray(weights, np.float64)
    wanted = np.round(weights / weights.sum() * total).astype(int)
    out = []
    for d, (size, want) in enumerate(zip(sizes, wanted)):
        rng = np.random.default_rng([seed, d])
        repeats, rest = divmod(int(want), size)
        rows = np.concatenate([np.tile(np.arange(size), repeats), np.sort(rng.choice(size, rest, replace=False))])
        out.append(np.sort(rows, kind="stable"))
    return out


def merge(datasets: Mapping[str, RecDataset], weights: Sequence[float] = (), seed: int = 0) -> RecDataset:
    """One dataset of several domains (in `datasets`' order); `weights`: the train mixture, () = natural."""
    if len(datasets) < 2:
        raise ValueError(f"a mix needs two or more domains, got {list(datasets)}")
    names, parts = list(datasets), list(datasets.values())
    if weights and (len(weights) != len(parts) or min(weights) <= 0):
        raise ValueError(f"mixture weights {list(weights)} must be one positive number per domain {names}")
    width = max(p.splits["train"].history.shape[1] for p in parts)
    item_offsets = np.cumsum([0] + [p.num_items for p in parts])
    user_offsets = np.cumsum([0] + [max(p.sequences) + 1 for p in parts])
    sizes = [len(p.splits["train"]) for p in parts]
    kept = mixture_rows(sizes, weights, seed) if weights else [np.arange(n) for n in sizes]
    splits = {}
    for split in SPLITS:
        shifted = [_shift(p.splits[split], int(io), int(uo), width)
                   for p, io, uo in zip(parts, item_offsets, user_offsets)]
        if split == "train":
            shifted = [s.take(rows) for s, rows in zip(shifted, kept)]
        splits[split] = _concat(shifted)
    sequences = {int(uo) + user: tuple(int(io) + i for i in seq)
                 for p, io, uo in zip(parts, item_offsets, user_offsets) for user, seq in p.sequences.items()}
    paper = None
    if all(p.paper_sids is not None for p in parts) and len({len(next(iter(p.paper_sids.values()))) for p in parts}) == 1:
        paper = {int(io) + i: sid for p, io in zip(parts, item_offsets) for i, sid in p.paper_sids.items()}
    return RecDataset(
        name="+".join(names),
        items=tuple(item for p in parts for item in p.items),
        sequences=sequences,
        splits=splits,
        paper_sids=paper,
        paper_sids_origin=" + ".join(p.paper_sids_origin or p.name for p in parts) if paper else None,
        domains=tuple(names),
        item_domain=np.repeat(np.arange(len(parts), dtype=np.int32), [p.num_items for p in parts]),
    ).check(" + ".join(names))


def sample_domains(dataset: RecDataset, split: str) -> np.ndarray:
    """The domain index of each sample of `split` (its target's domain): int32 [n]."""
    targets = dataset.splits[split].target
    return np.zeros(len(targets), np.int32) if dataset.item_domain is None else dataset.item_domain[targets]


def restrict(dataset: RecDataset, domains: Sequence[str]) -> RecDataset:
    """The view of `domains` (all items kept; samples, sequences and item tasks of those domains only)."""
    domains = tuple(domains)
    unknown = [d for d in domains if d not in dataset.domain_names]
    if unknown:
        raise ValueError(f"domains {unknown} are not in the dataset (its domains: {list(dataset.domain_names)})")
    if not domains or set(domains) == set(dataset.domain_names):
        return dataset
    wanted = [dataset.domain_names.index(d) for d in domains]
    splits, source_rows = {}, {}
    for split in SPLITS:
        rows = np.flatnonzero(np.isin(sample_domains(dataset, split), wanted))
        splits[split], source_rows[split] = dataset.splits[split].take(rows), rows
    keep = set(dataset.domain_items(domains).tolist())
    sequences = {u: s for u, s in dataset.sequences.items() if s and s[0] in keep}
    return dataclasses.replace(dataset, splits=splits, sequences=sequences, selected=domains, source_rows=source_rows)
