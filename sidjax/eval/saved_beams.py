"""An eval's saved beams (`<split>.jsonl`), read back and re-scored without searching again.

An eval without re-scoring writes every beam of every user with its score and items. Re-scoring
only adds weight x log P_dense(SID) per dense model and sorts again, so a hybrid over the same
models can re-rank those records instead of repeating the search (`eval.beams_from`): the records
go through `DenseRescorer.rescore` in the batches the search used (the last padded with its first
row, as the search pads it), so the scores, order and ranks are the ones a search with
`eval.rescore` writes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sidjax.eval.evaluate import Recommendations
from sidjax.eval.rescore import DenseRescorer


def read_records(path: Path) -> list[dict[str, Any]]:
    """The sample records of a direct-mode eval's `<split>.jsonl`; a line that is not one is refused, naming it."""
    records = []
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
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no samples")
    return records


def _beams(record: dict[str, Any]) -> tuple[list[int], str, list[tuple[float, list[int], str]]]:
    """History items, target SID and (score, items, SID) per beam: every field re-scoring reads."""
    return ([h["item"] for h in record["history"]], record["target"]["sid"],
            [(b["score"], b["items"], b["sid"]) for b in record["recommendations"]])


def beam_arrays(records: list[dict[str, Any]]) -> tuple[list[list[int]], np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray]:
    """Histories, beam scores f64 [n, B] (-inf pads), beam items int32 [n, B, S] (-1 pads), beam SID strings
    (object [n, B]) and target SID strings [n] of `read_records`' records."""
    parsed = [_beams(record) for record in records]
    beams = max(len(row) for _, _, row in parsed)
    share = max(len(beam_items) for _, _, row in parsed for _, beam_items, _ in row)
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


def rescore_records(records: list[dict[str, Any]], rescorer: DenseRescorer, batch_size: int
                    ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Each record with its beams re-scored and re-sorted (and its hit rank), and the hit ranks int32 [n]."""
    histories, scores, items, _, _ = beam_arrays(records)
    n, beams, share = items.shape
    out, ranks = [], np.full(n, -1, np.int32)
    for start in range(0, n, batch_size):
        rows = list(range(start, min(start + batch_size, n)))
        padded = rows + [rows[0]] * (batch_size - len(rows))
        valid = np.isfinite(scores[padded])
        leaves = np.where(valid, np.arange(len(padded) * beams).reshape(len(padded), beams), -1).astype(np.int32)
        found = Recommendations(leaves=leaves, codes=np.zeros((len(padded), beams, 0), np.int32),
                                scores=scores[padded].astype(np.float32), valid=valid, reasoning=None)
        rescored = rescorer.rescore([histories[i] for i in padded], found, items[padded].reshape(-1, share))
        for j, i in enumerate(rows):
            saved = records[i]["recommendations"]
            resorted = [{**saved[int(leaf) - j * beams], "rank": b, "score": float(rescored.scores[j, b])}
                        for b, (leaf, ok) in enumerate(zip(rescored.leaves[j], rescored.valid[j])) if ok]
            target = records[i]["target"]["sid"]
            ranks[i] = next((beam["rank"] for beam in resorted if beam["sid"] == target), -1)
            out.append({**records[i], "hit_rank": int(ranks[i]), "recommendations": resorted})
    return out, ranks
