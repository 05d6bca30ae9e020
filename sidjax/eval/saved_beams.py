"""An eval's saved beams (`<split>.jsonl`), read back and re-scored without searching again.

An eval without re-scoring writes every beam of every user with its score and items. Re-scoring
only adds weight x log P_dense(SID) per dense model and sorts again, so a hybrid over the same
models can re-rank those records instead of repeating the search (`eval.beams_from`): the records
go through `DenseRescorer.rescore` in the batches the search used (the last padded with its first
row, as the search pads it), so the scores, order and ranks are the ones a search with
`eval.rescore` writes.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sidjax.eval.evaluate import Recommendations
from sidjax.eval.rescore import DenseRescorer


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """The sample records of a direct-mode eval's `<split>.jsonl`, one at a time; a line that is not one is
    refused, naming it."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                _beams(record)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not a JSON line ({e.msg})") from e
            except (KeyError, TypeError) as e:
                raise ValueError(f"{path}:{line_no}: not an eval sample record (field {e} missing or malformed)") from e
            if "reasoning" in record:
                raise ValueError(f"{path}:{line_no}: a reasoning-mode sample; re-scoring takes direct-mode beams")
            yield record


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every sample record of a direct-mode eval's `<split>.jsonl` (`_records`); none is an error."""
    records = list(_records(path))
    if not records:
        raise ValueError(f"{path}: no samples")
    return records


def _beams(record: dict[str, Any]) -> tuple[list[int], str, list[tuple[float, list[int], str]]]:
    """History items, target SID and (score, items, SID) per beam: every field re-scoring reads."""
    return ([h["item"] for h in record["history"]], record["target"]["sid"],
            [(b["score"], b["items"], b["sid"]) for b in record["recommendations"]])


def beam_arrays(records: list[dict[str, Any]], beams: int = 0, share: int = 0
                ) -> tuple[list[list[int]], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Histories, beam scores f64 [n, B] (-inf pads), beam items int32 [n, B, S] (-1 pads), beam SID strings
    (object [n, B]) and target SID strings [n] of `read_records`' records; B and S at least `beams` and
    `share`."""
    parsed = [_beams(record) for record in records]
    beams = max([beams] + [len(row) for _, _, row in parsed])
    share = max([share] + [len(beam_items) for _, _, row in parsed for _, beam_items, _ in row])
    scores = np.full((len(records), beams), -np.inf)
    items = np.full((len(records), beams, share), -1, np.int32)
    sids = np.full((len(records), beams), "", object)
    for i, (_, _, row) in enumerate(parsed):
        for b, (score, beam_items, sid) in enumerate(row):
            scores[i, b] = score
            items[i, b, :len(beam_items)] = beam_items
            sids[i, b] = sid
    histories = [history for history, _, _ in parsed]
    targets = np.asarray([target for _, target, _ in parsed], object)
    return histories, scores, items, sids, targets


def rescore_file(source: Path, rescorer: DenseRescorer, batch_size: int, out: Path | None) -> np.ndarray:
    """Re-score and re-sort the beams of every record in `source`, batch by batch (memory: one batch), writing
    the records as the search writes them to `out` (whole or not at all; None: not written); the hit ranks
    int32 [n]."""
    samples = beams = share = 0
    for record in _records(source):  # the widest row first, so every batch has one shape (SASRec compiles once)
        samples += 1
        beams = max(beams, len(record["recommendations"]))
        share = max([share] + [len(beam["items"]) for beam in record["recommendations"]])
    if not samples:
        raise ValueError(f"{source}: no samples")
    partial = None if out is None else out.with_name(out.name + ".tmp")
    ranks = []
    with open(partial, "w", encoding="utf-8") if partial is not None else contextlib.nullcontext() as writer:
        for batch in _batched(_records(source), batch_size):
            for record in _rescore_batch(batch, rescorer, batch_size, beams, share):
                ranks.append(record["hit_rank"])
                if writer is not None:
                    writer.write(json.dumps(record, ensure_ascii=False) + "\n")
    if partial is not None:
        os.replace(partial, out)
    return np.asarray(ranks, np.int32)


def _batched(records: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _rescore_batch(records: list[dict[str, Any]], rescorer: DenseRescorer, batch_size: int, beams: int,
                   share: int) -> list[dict[str, Any]]:
    """The records with their beams re-scored and re-sorted, and their hit ranks, as the search writes them."""
    padded = records + [records[0]] * (batch_size - len(records))  # the search's padding of a last batch
    histories, scores, items, _, _ = beam_arrays(padded, beams, share)
    valid = np.isfinite(scores)
    leaves = np.where(valid, np.arange(batch_size * beams).reshape(batch_size, beams), -1).astype(np.int32)
    found = Recommendations(leaves=leaves, codes=np.zeros((batch_size, beams, 0), np.int32),
                            scores=scores.astype(np.float32), valid=valid, reasoning=None)
    rescored = rescorer.rescore(histories, found, items.reshape(-1, share))
    out = []
    for j, record in enumerate(records):
        saved = record["recommendations"]
        resorted = [{**saved[int(leaf) - j * beams], "rank": b, "score": float(rescored.scores[j, b])}
                    for b, (leaf, ok) in enumerate(zip(rescored.leaves[j], rescored.valid[j])) if ok]
        target = record["target"]["sid"]
        rank = next((beam["rank"] for beam in resorted if beam["sid"] == target), -1)
        out.append({**record, "hit_rank": rank, "recommendations": resorted})
    return out
