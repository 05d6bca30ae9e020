"""Recommend next items for histories and evaluate a split, sharded over the mesh's batch axes.

`Recommender` holds what a recommendation needs (model, chat format, SIDs,
trie, token layout; `sidjax.bundle.Bundle.recommender` makes one from a model bundle).
Its `search` turns a batch of histories into the shared next-SID prompt
(`sidjax.data.tasks`), then runs the constrained beam search (its beams optionally re-scored by dense item models,
`sidjax.eval.rescore`); in reasoning mode
the model first thinks (greedy or sampled, up to a token budget, until `</think>`) and the
search continues from the thought's cache (`sidjax.decode.think`). `evaluate_split` feeds a
split through it in fixed-size global batches laid out over the mesh's
("data", "fsdp") axes (every process holds the split; each device gets its
rows), gathers the beams to every host and computes HR@K / NDCG@K on
process 0, which also writes one JSON line per sample. `recommend` is the
user-facing call (what `sidjax.load` returns): one history in, rows of SIDs,
items, titles and scores out.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from sidjax.data.dataset import RecDataset
from sidjax.data.formatting import ChatFormat
from sidjax.data.task_names import CHAT_STYLES
from sidjax.data.tasks import THINK_CLOSE, THINK_OPEN, next_item_prompt, reasoning_target, sid_strings
from sidjax.decode.beam import BeamResult, TrieTables, beam_search
from sidjax.decode.citations import Citations, history_citations, token_levels
from sidjax.decode.options import CITATIONS, MODES
from sidjax.decode.sample import SamplingParams, pad_prompts
from sidjax.decode.think import think_and_search
from sidjax.eval import reasoning_quality
from sidjax.eval.rescore import DenseRescorer
from sidjax.model.transformer import CausalLM
from sidjax.parallel.placement import put_batch
from sidjax.parallel.rules import logical_spec
from sidjax.sid.codes import SidTrie, sid_string
from sidjax.teacher.evidence import item_kinds
from sidjax.utils.progress import progress
from sidjax.utils.ranking import hit_ranks, ranking_metrics


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """Per history, beams best first."""

    leaves: np.ndarray  # int32 [n, R] rows of `trie.leaf_sids` / `trie.leaf_items`, -1 where not valid
    codes: np.ndarray  # int32 [n, R, L]
    scores: np.ndarray  # float32 [n, R] sum of SID token log-probs (+ the weighted dense models', re-scored)
    valid: np.ndarray  # bool [n, R]
    reasoning: list[str] | None  # the generated thinking per history (reasoning mode)


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How to search (a public argument of `recommend`, so it keeps its defaults; `sidjax.stages.settings`
    builds it from `config.eval`)."""

    beams: int
    normalize: str = "vocab"
    mode: str = "direct"
    prompt_bucket: int = 32
    think: SamplingParams | None = None  # reasoning mode's generation settings
    citations: str = "free"  # reasoning mode: the SIDs a thought may write (sidjax.decode.options.CITATIONS)
    # Reasoning mode: thoughts sampled per history (path k with seed + k); each is searched and a SID scores the
    # mean of its probabilities over them (`_merge_paths`), an estimate of P(SID | history), the thought summed out.
    think_paths: int = 1
    seed: int = 0


class Recommender:
    """A trained model (or an ensemble of models over the same tokens) that recommends SIDs for histories."""

    def __init__(self, model: CausalLM | tuple[CausalLM, ...], fmt: ChatFormat, sids: np.ndarray,
                 level_offsets: Sequence[int], level_sizes: Sequence[int] | None = None,
                 mesh: jax.sharding.Mesh | None = None, rescorer: DenseRescorer | None = None, bundle: Any = None):
        self.model = model
        # The `sidjax.bundle.Bundle` it was made from (`Bundle.recommender`, `sidjax.load`), if any: its
        # tokenizer, config, directory and step, and the dataset whose titles `recommend` returns.
        self.bundle = bundle
        self.rescorer = rescorer  # re-scores the search's beams with dense item models (eval.rescore)
        self.format = fmt
        self.sids = np.asarray(sids, np.int32)
        if rescorer is not None and rescorer.num_items != len(self.sids):
            raise ValueError(f"the dense re-scorer was trained on {rescorer.num_items} items, the SID table has "
                             f"{len(self.sids)}: they come from other datasets")
        self.level_offsets = tuple(level_offsets)
        self.trie = SidTrie.build(self.sids, level_sizes)
        self.tables = TrieTables.from_trie(self.trie, level_offsets)
        self.mesh = mesh
        self._item_sids = sid_strings(self.sids)
        self.catalogue = set(self._item_sids)  # every real item's SID string (what a cited SID is checked against)
        first = model[0] if isinstance(model, tuple) else model
        self.token_level = token_levels(first.config.vocab_size, self.level_offsets, self.trie.level_sizes)
        self.think_close_id = self._token_id(THINK_CLOSE)
        # Every reasoning turn training shows starts with `<think>`, so a reasoning prompt ends with it: the
        # model writes the thought, never a first word sampled in its place (or a `</think>` with nothing before).
        think_open_id = self._token_id(THINK_OPEN)
        self.thought_opener_ids = [] if think_open_id is None else [think_open_id]
        separator = reasoning_target("-", "").split(THINK_CLOSE, 1)[1]  # what training puts between it and the SID
        self.answer_prefix_ids = fmt.tokenizer.encode(separator, add_special_tokens=False).ids

    def within(self, items: np.ndarray) -> "Recommender":
        """This recommender ranking only `items` (one domain's catalogue): the same model, a smaller trie."""
        out = copy.copy(self)
        out.trie = SidTrie.build(self.sids, self.trie.level_sizes, items=items)
        out.tables = TrieTables.from_trie(out.trie, self.level_offsets)
        return out

    def _token_id(self, token: str) -> int | None:
        return self.format.tokenizer.token_to_id(token)

    def prompt_ids(self, histories: Sequence[Sequence[int]], mode: str = "direct") -> list[list[int]]:
        """Token ids of the next-SID prompt (direct) or of the reasoning prompt, which ends with `<think>`."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
        style = self.format.prompt_style
        if mode == "reasoning" and style not in CHAT_STYLES:
            raise ValueError(f"reasoning mode needs a chat prompt style {CHAT_STYLES}; this model was trained with "
                             f"'{style}'")
        prompts = []
        for h, history in enumerate(histories):
            bad = [i for i in history if not 0 <= i < len(self._item_sids)]
            if bad or not history:
                raise ValueError(f"history {h}: item ids must be 0..{len(self._item_sids) - 1} and non-empty, got {list(history)}")
            sids = [self._item_sids[i] for i in history]
            prompts.append(next_item_prompt(sids, style, mode))
        ids = self.format.prompt_ids(prompts)
        return [p + self.thought_opener_ids for p in ids] if mode == "reasoning" else ids

    def _gather(self, tree: Any) -> Any:
        if self.mesh is None:
            return jax.tree.map(np.asarray, tree)
        return multihost_utils.process_allgather(tree, tiled=True)

    def search(self, histories: Sequence[Sequence[int]], settings: SearchSettings, batch_index: int = 0
               ) -> Recommendations:
        """Beams for each history (one batch; its size must divide over the mesh's batch axes).

        `batch_index` picks the sampling stream of sampled reasoning (evaluate_split numbers its batches).
        """
        if settings.mode == "reasoning":
            if settings.think is None:
                raise ValueError("reasoning mode needs SearchSettings.think (the generation settings)")
            if not isinstance(self.model, CausalLM):
                raise ValueError("reasoning mode thinks with one model; an ensemble searches in direct mode only")
            if self.think_close_id is None:
                raise ValueError(f"reasoning mode: '{THINK_CLOSE}' is not a token of the model's tokenizer")
        prompts = self.prompt_ids(histories, settings.mode)
        if settings.mode == "reasoning" and settings.think_paths != 1:
            recs = self._search_paths(histories, prompts, settings, batch_index)
        else:
            recs = self._search_once(histories, prompts, settings, batch_index)
        return recs if self.rescorer is None else self.rescorer.rescore(histories, recs, self.trie.leaf_items)

    def _search_once(self, histories: Sequence[Sequence[int]], prompts: list[list[int]], settings: SearchSettings,
                     batch_index: int) -> Recommendations:
        """The search's beams before re-scoring (one thought per history in reasoning mode)."""
        pad_id = self.format.eos_id
        tokens, mask = pad_prompts(prompts, bucket=settings.prompt_bucket, pad_id=pad_id)
        batch = put_batch((tokens, mask), self.mesh, rows="global")
        reasoning = None
        if settings.mode == "reasoning":
            result, reasoning = _think(self, histories, batch, settings, pad_id, batch_index)
        else:
            result = beam_search(self.model, *batch, self.tables, num_beams=settings.beams,
                                 normalize=settings.normalize)
        result = self._gather(result)
        return Recommendations(leaves=result.leaves, codes=result.codes, scores=result.scores, valid=result.valid,
                               reasoning=reasoning)

    def _search_paths(self, histories: Sequence[Sequence[int]], prompts: list[list[int]], settings: SearchSettings,
                      batch_index: int) -> Recommendations:
        """`settings.think_paths` searches with one sampled thought each, merged (`_merge_paths`).

        Path k samples with seed `settings.seed + k`, so it is the one-path search of that seed, and the
        paths run one after another, so memory stays that of one path.
        """
        paths = settings.think_paths
        if paths < 1 or settings.think.temperature == 0:
            raise ValueError(f"think_paths must be 1, or more with sampled thinking (temperature > 0), got {paths} "
                             f"at temperature {settings.think.temperature}: greedy paths are all one")
        return _merge_paths([self._search_once(histories, prompts, dataclasses.replace(settings, seed=settings.seed + k),
                                               batch_index) for k in range(paths)])

    def recommend(self, history: Sequence[int], *, beams: int = 10, mode: str = "direct", normalize: str = "vocab",
                  max_think_tokens: int | None = None, repetition_penalty: float | None = None,
                  no_repeat_ngram: int | None = None, citations: str | None = None, think_paths: int = 1,
                  think_temperature: float = 0.0, domain: str = "") -> list[dict[str, Any]]:
        """Top-`beams` next items for one history of item ids, best first (in reasoning mode, greedy thinking,
        or `think_paths` thoughts sampled at `think_temperature` and merged as `SearchSettings.think_paths`).

        Each row: the SID, its score, the items that carry it and their titles (and the thinking, in
        reasoning mode). Titles come from the bundle's dataset. `domain`: a model of a mix
        (`data.source = "mix"`) recommends from that domain's catalogue only ("": from every domain).
        The thought's rules left at None (budget, repetition penalty, n-gram guard, citations) are the ones
        the run evaluates its reasoning with (`Bundle.thinking`).
        """
        if self.bundle is None:
            raise ValueError("recommend needs the bundle the Recommender was made from (for item titles); "
                             "use search for a Recommender built without one")
        given = {"max_think_tokens": max_think_tokens, "repetition_penalty": repetition_penalty,
                 "no_repeat_ngram": no_repeat_ngram, "citations": citations}
        rules = {k: self.bundle.thinking[k] if v is None else v for k, v in given.items()}
        if domain:
            dataset = self.bundle.dataset
            if domain not in dataset.domains:
                raise ValueError(f"domain '{domain}' is not one of this model's domains {list(dataset.domains)}")
            return self.within(dataset.domain_items((domain,))).recommend(
                history, beams=beams, mode=mode, normalize=normalize, think_paths=think_paths,
                think_temperature=think_temperature, **rules)
        think = None
        if mode == "reasoning":
            think = SamplingParams(max_new_tokens=rules["max_think_tokens"], temperature=think_temperature, top_k=0,
                                   top_p=1.0, repetition_penalty=rules["repetition_penalty"],
                                   no_repeat_ngram=rules["no_repeat_ngram"], stop_tokens=(), suppress_tokens=(),
                                   thought_end=-1, num_samples=1)
        out = self.search([list(history)], SearchSettings(beams=beams, normalize=normalize, mode=mode, think=think,
                                                          citations=rules["citations"], think_paths=think_paths))
        require_found(out, ["the history"])
        titles = self.bundle.dataset.titles()
        rows = []
        for b in np.flatnonzero(out.valid[0]):
            items = self.items(int(out.leaves[0, b]))
            row = {"sid": sid_string(out.codes[0, b]), "score": float(out.scores[0, b]), "items": items,
                   "titles": [titles[i] for i in items]}
            if out.reasoning is not None:
                row["reasoning"] = out.reasoning[0]
            rows.append(row)
        return rows

    def items(self, leaf: int) -> list[int]:
        """Item ids that carry the SID of `leaf` (several when items share a SID)."""
        return [int(i) for i in self.trie.leaf_items[leaf] if i >= 0]


def require_found(out: Recommendations, names: Sequence[str]) -> None:
    """Refuse a search whose beams for a row are all invalid or score NaN, naming the row (`names[i]`).

    The constrained search always finds SIDs when the model's scores are finite, so this is a
    damaged or diverged model: never an empty list or a silent metric of 0.
    """
    valid = out.valid[: len(names)]
    bad = ~valid.any(axis=1) | (valid & np.isnan(out.scores[: len(names)])).any(axis=1)
    if bad.any():
        raise ValueError(f"{names[int(np.flatnonzero(bad)[0])]}: the constrained search found no valid SID beam "
                         f"(the model's scores are NaN or Inf): its weights are damaged or diverged")


def _merge_paths(found: Sequence[Recommendations]) -> Recommendations:
    """One search per sampled thought -> one: a SID scores log(mean over the searches of P(SID | history,
    thought)), 0 where a search missed it; with thoughts sampled from the model, a Monte Carlo estimate of
    log P(SID | history). Each history keeps the thought of the search that gave its first SID the highest
    probability.
    """
    paths = len(found)
    n, beams = found[0].leaves.shape
    all_leaves = np.stack([f.leaves for f in found], axis=1)  # [n, paths, beams]
    all_scores = np.stack([f.scores for f in found], axis=1)
    all_valid = np.stack([f.valid for f in found], axis=1)
    all_codes = np.stack([f.codes for f in found], axis=1)
    leaves = np.full((n, beams), -1, np.int32)
    codes = np.zeros((n, beams, all_codes.shape[-1]), all_codes.dtype)
    scores = np.full((n, beams), -np.inf, np.float32)
    valid = np.zeros((n, beams), bool)
    reasoning = []
    for i in range(n):
        ok = all_valid[i]
        unique, first, inverse = np.unique(all_leaves[i][ok], return_index=True, return_inverse=True)
        merged = np.full(unique.size, -np.inf)
        np.logaddexp.at(merged, inverse, all_scores[i][ok].astype(np.float64))
        order = np.argsort(-merged, kind="stable")[:beams]
        k = order.size
        leaves[i, :k], scores[i, :k], valid[i, :k] = unique[order], merged[order] - np.log(paths), True
        codes[i, :k] = all_codes[i][ok][first[order]]
        backing = np.where(ok & (all_leaves[i] == (unique[order[0]] if k else -2)), all_scores[i], -np.inf).max(axis=1)
        reasoning.append(found[int(np.argmax(backing))].reasoning[i])
    return Recommendations(leaves=leaves, codes=codes, scores=scores, valid=valid, reasoning=reasoning)


def _think(rec: Recommender, histories: Sequence[Sequence[int]], batch: tuple[jax.Array, jax.Array],
           settings: SearchSettings, pad_id: int, batch_index: int) -> tuple[BeamResult, list[str]]:
    """Think up to the budget until `</think>`, then search after the thought (`think_and_search`); the texts.

    A reasoning-mode turn is `<think> ... </think> SID` and its prompt ends with the `<think>`, so the
    end of the turn is no move inside a thought: it is suppressed, and a thought ends by `</think>` or
    by the budget. One cut at the budget gets `</think>` appended (not in its text, so the text shows
    whether the model closed it), then the separator that training puts between `</think>` and the
    SID. With `citations="history"` every SID a thought writes is one of its history's.
    """
    if settings.citations not in CITATIONS:
        raise ValueError(f"citations must be one of {CITATIONS}, got '{settings.citations}'")
    params = dataclasses.replace(settings.think, stop_tokens=(rec.think_close_id,),
                                 suppress_tokens=tuple(rec.format.stop_ids))
    cites = None
    if settings.citations == "history":
        host = history_citations(rec.sids, histories, rec.level_offsets, rec.token_level)
        cites = Citations(put_batch(host.sids, rec.mesh, rows="global"),
                          put_batch(host.token_level, rec.mesh, rows="replicated"))
    thoughts, result = think_and_search(
        rec.model, *batch, params, rng=jax.random.fold_in(jax.random.key(settings.seed), batch_index), pad_id=pad_id,
        cites=cites, tables=rec.tables, close_id=rec.think_close_id, answer_prefix=tuple(rec.answer_prefix_ids),
        num_beams=settings.beams, normalize=settings.normalize)
    thoughts = rec._gather(thoughts)
    # What the model wrote, after the opener its prompt ends with.
    texts = [rec.format.tokenizer.decode(rec.thought_opener_ids + [int(t) for t in row[:length]],
                                         skip_special_tokens=False)
             for row, length in zip(thoughts.tokens[:, 0], thoughts.lengths[:, 0])]
    return result, texts


def batch_multiple(mesh: jax.sharding.Mesh | None) -> int:
    """Global batches must split evenly over the mesh axes the batch is sharded on."""
    if mesh is None:
        return 1
    axes = logical_spec(("activation_batch",))[0]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    return int(np.prod([mesh.shape[a] for a in axes]))


class _SplitProgress:
    """The batches of one split evaluated so far, so a killed eval resumes after its last finished batch.

    Records go to `<samples>.partial`, fsynced per batch; then the marker at `path` (written
    atomically) records the batches done, the partial file's length and the ranks so far. A
    relaunch whose `signature` matches cuts the partial file back to that length and skips those
    batches; the finished file is renamed into place last, so a partial one is never taken as
    complete. Process 0 keeps the marker and tells the other processes where to start.
    """

    def __init__(self, path: str | Path | None, signature: dict[str, Any], samples_path: str | Path | None,
                 total: int):
        self.path = Path(path) if path else None
        self.signature = signature
        self.samples = Path(samples_path) if samples_path else None
        self.partial = self.samples.with_name(self.samples.name + ".partial") if self.samples else None
        self.batches, self.length, self.ranks, self.qualities = 0, 0, [], []
        if self.path is not None and self.path.exists() and jax.process_index() == 0:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            finished = saved["batches"] == total
            if saved["signature"] == signature and (self.partial is None or self.partial.exists()
                                                    or (finished and self.samples.exists())):
                self.batches, self.length, self.ranks = saved["batches"], saved["length"], saved["ranks"]
                self.qualities = saved.get("qualities", [])
            else:
                logging.warning("eval: %s was written by another evaluation; starting this split over", self.path)
        if jax.process_count() > 1:
            self.batches = int(multihost_utils.broadcast_one_to_all(np.int32(self.batches)))
        if self.batches:
            logging.info("eval: resuming %s after batch %d", signature["split"], self.batches)

    def open_samples(self, total: int):
        """The partial samples file cut back to the last finished batch (None: nothing to write here)."""
        if self.partial is None or jax.process_index() != 0:
            return None
        if self.batches == total:
            if self.partial.exists():  # killed between the last batch and the rename
                os.replace(self.partial, self.samples)
            return None
        f = open(self.partial, "r+b" if self.batches else "wb")
        f.truncate(self.length)
        f.seek(self.length)
        return f

    def batch_done(self, writer, ranks: np.ndarray, qualities: list[dict[str, Any]]) -> None:
        self.batches += 1
        if writer is not None:
            writer.flush()
            os.fsync(writer.fileno())
            self.length = writer.tell()
        if self.path is not None and jax.process_index() == 0:
            state = {"signature": self.signature, "batches": self.batches, "length": self.length,
                     "ranks": ranks.tolist(), "qualities": qualities}
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, self.path)

    def finish(self, writer) -> None:
        """Put the finished samples file in place."""
        if writer is not None:
            writer.close()
            os.replace(self.partial, self.samples)


def evaluate_split(rec: Recommender, dataset: RecDataset, split: str, settings: SearchSettings, *,
                   batch_size: int, ks: Sequence[int], max_users: int = 0,
                   samples_path: str | Path | None = None, progress_path: str | Path | None = None,
                   progress_tag: Any = None) -> tuple[dict[str, float], np.ndarray]:
    """HR@K / NDCG@K of `split` and each sample's hit rank (and per-sample JSONL at `samples_path`, process 0).

    `progress_path`: where to keep the finished batches (`_SplitProgress`), so a killed run
    relaunched resumes to the same metrics and samples file; `progress_tag` names the model
    (a marker of another model or other settings is ignored).
    """
    data = dataset.splits[split]
    n = len(data) if max_users == 0 else min(max_users, len(data))
    multiple = batch_multiple(rec.mesh)
    if batch_size % multiple:
        raise ValueError(f"batch size {batch_size} is not a multiple of the mesh's batch axes size {multiple}")
    if max(ks) > settings.beams:
        raise ValueError(f"top-K metrics need K <= beams, got K={max(ks)} > beams={settings.beams}")
    histories = data.histories()[:n]
    ranks = np.full(n, -1, np.int32)
    signature = json.loads(json.dumps({"split": split, "users": n, "batch_size": batch_size,
                                       "settings": dataclasses.asdict(settings), "samples": samples_path is not None,
                                       "model": progress_tag}, default=str))
    total = -(-n // batch_size)
    done = _SplitProgress(progress_path, signature, samples_path, total)
    qualities: list[dict[str, Any]] = []  # per sample, reasoning mode (sidjax.eval.reasoning_quality)
    if done.batches and jax.process_index() == 0:
        ranks[:len(done.ranks)] = done.ranks
        qualities = list(done.qualities)
    if jax.process_count() > 1:
        ranks = np.asarray(multihost_utils.broadcast_one_to_all(ranks))
    writer = done.open_samples(total)
    titles = dataset.titles()
    kinds = (reasoning_quality.ItemKinds(rec._item_sids, item_kinds(dataset.items)) if settings.mode == "reasoning"
             else None)
    try:
        for b in progress(range(done.batches, total), desc=f"eval {split}", total=total, unit="batch"):
            start = b * batch_size
            rows = list(range(start, min(start + batch_size, n)))
            padded = rows + [rows[0]] * (batch_size - len(rows))  # fixed shapes; extra rows are dropped
            out = rec.search([histories[i] for i in padded], settings, batch_index=b)
            require_found(out, [f"split '{split}' sample {i} (user {int(data.users[i])})" for i in rows])
            targets = rec.sids[data.target[rows]]
            batch_ranks = hit_ranks(out.codes[: len(rows)], targets, out.valid[: len(rows)])
            ranks[rows] = batch_ranks
            batch_qualities = [] if out.reasoning is None else [
                _assess(rec, histories[i], titles, kinds, out, j) for j, i in enumerate(rows)]
            qualities += batch_qualities
            if writer is not None:
                for j, i in enumerate(rows):
                    record = _sample_record(rec, data, i, histories[i], titles, out, j, int(batch_ranks[j]), split)
                    if batch_qualities:
                        record["reasoning_quality"] = batch_qualities[j]
                    writer.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            done.batch_done(writer, ranks[:rows[-1] + 1], qualities)
        done.finish(writer)
        writer = None
    finally:
        if writer is not None:
            writer.close()
    metrics = ranking_metrics(ranks, ks)
    metrics["users"] = float(n)
    metrics.update(reasoning_quality.summarize(qualities))
    logging.info("eval %s (%d samples, %d beams, %s): %s", split, n, settings.beams, settings.mode,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "users"))
    return metrics, ranks


def _assess(rec: Recommender, history: list[int], titles: list[str], kinds: reasoning_quality.ItemKinds,
            out: Recommendations, j: int) -> dict[str, Any]:
    top = int(np.flatnonzero(out.valid[j])[0])  # require_found: every row has a valid beam
    return reasoning_quality.assess(out.reasoning[j], [rec._item_sids[i] for i in history],
                                    [titles[i] for i in history], rec.catalogue, sid_string(out.codes[j, top]),
                                    kinds)


def _sample_record(rec: Recommender, data, i: int, history: list[int], titles: list[str], out: Recommendations,
                   j: int, rank: int, split: str) -> dict[str, Any]:
    def item(i: int) -> dict[str, Any]:
        return {"item": int(i), "title": titles[i], "sid": rec._item_sids[i]}

    beams = []
    for b in range(out.leaves.shape[1]):
        if not out.valid[j, b]:
            continue
        items = rec.items(int(out.leaves[j, b]))
        beams.append({"rank": b, "sid": rec._item_sids[items[0]], "score": float(out.scores[j, b]),
                      "items": items, "titles": [titles[k] for k in items]})
    record = {"split": split, "index": int(i), "user": int(data.users[i]), "history": [item(k) for k in history],
              "target": item(int(data.target[i])), "hit_rank": rank, "recommendations": beams}
    if out.reasoning is not None:
        record["reasoning"] = out.reasoning[j]
    return record
