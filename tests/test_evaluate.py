"""Evaluation: per-sample records agree with the metrics; reasoning mode; 8 sharded devices equal one."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from sidjax.data.dataset import Item, RecDataset, Split
from sidjax.data.formatting import ChatFormat
from sidjax.decode.sample import SamplingParams
from sidjax.eval.evaluate import Recommender, SearchSettings, evaluate_split
from sidjax.model.config import preset
from sidjax.model.tokenizer import CHAT_TEMPLATE, EOS_TOKEN, item_texts, tokenizer_config, train_bpe
from sidjax.model.transformer import CausalLM
from sidjax.model.vocab import add_sid_tokens, padded_size
from sidjax.parallel.mesh import make_mesh
from sidjax.utils.ranking import RANKS_FILE, ranking_metrics, read_ranks

LEVEL_SIZES = (3, 4, 4)
NUM_ITEMS = 24


def build(mesh=None):
    """A tiny random model with a BPE + SID-token vocabulary over a synthetic dataset."""
    rng = np.random.default_rng(0)
    items = tuple(Item(title=f"item {i} {'red blue green'.split()[i % 3]} widget") for i in range(NUM_ITEMS))
    rows = [(u, rng.integers(0, NUM_ITEMS, rng.integers(1, 6)).tolist(), int(rng.integers(0, NUM_ITEMS)))
            for u in range(13)]
    split = Split.from_rows(rows, max_history=10)
    dataset = RecDataset(name="toy", items=items, sequences={u: tuple(h) + (t,) for u, h, t in rows},
                         splits={"train": split, "valid": split, "test": split})
    sids = np.stack([rng.integers(0, s, NUM_ITEMS) for s in LEVEL_SIZES], axis=1).astype(np.int32)
    tokenizer = train_bpe(item_texts(items), vocab_size=300)
    offsets = add_sid_tokens(tokenizer, LEVEL_SIZES)
    fmt = ChatFormat(tokenizer, eos_token=EOS_TOKEN, chat_template=CHAT_TEMPLATE)
    vocab = padded_size(tokenizer.get_vocab_size(with_added_tokens=True), 128)
    model = CausalLM(preset("tiny", vocab), rngs=nnx.Rngs(0))
    if mesh is not None:
        from sidjax.parallel.mesh import shard_model

        shard_model(model, mesh)
    return dataset, Recommender(model, fmt, sids, offsets, LEVEL_SIZES, mesh=mesh)


@pytest.fixture(scope="module")
def setup():
    return build()


def test_records_and_metrics_agree(setup, tmp_path):
    dataset, rec = setup
    path = tmp_path / "test.jsonl"
    ks = (1, 3, 5, 10)
    metrics, returned = evaluate_split(rec, dataset, "test", SearchSettings(beams=10), batch_size=4, ks=ks,
                                       samples_path=path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == len(dataset.splits["test"]) == metrics["users"]
    ranks = []
    for r in records:
        target_sid = r["target"]["sid"]
        sids = [b["sid"] for b in r["recommendations"]]
        assert len(sids) == len(set(sids)) == 10
        assert r["hit_rank"] == (sids.index(target_sid) if target_sid in sids else -1)
        assert all(dataset.items[i].title == t for b in r["recommendations"] for i, t in zip(b["items"], b["titles"]))
        assert all(rec.sids[i].tolist() == rec.sids[b["items"][0]].tolist() for b in r["recommendations"] for i in b["items"])
        assert [h["item"] for h in r["history"]] == dataset.splits["test"].histories()[r["index"]]
        ranks.append(r["hit_rank"])
    assert returned.tolist() == ranks
    expected = ranking_metrics(np.asarray(ranks), ks)
    assert all(metrics[k] == pytest.approx(v) for k, v in expected.items())


def test_reasoning_mode_continues_the_search_after_the_thought(setup):
    import jax.numpy as jnp

    from sidjax.decode.beam import beam_search
    from sidjax.decode.sample import generate, pad_prompts

    dataset, rec = setup
    think = SamplingParams(max_new_tokens=5, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                           no_repeat_ngram=0, stop_tokens=(), suppress_tokens=(), thought_end=-1, num_samples=1)
    histories = [[1, 2], [3]]
    out = rec.search(histories, SearchSettings(beams=4, mode="reasoning", think=think))
    prompts = rec.prompt_ids(histories, "reasoning")
    assert "Think step by step" in rec.format.tokenizer.decode(prompts[0])
    # The turn's `<think>` is given: a reasoning prompt is the chat prompt up to the answer, then it.
    opener = rec.format.tokenizer.token_to_id("<think>")
    assert rec.thought_opener_ids == [opener]
    assert all(rec.format.tokenizer.decode(p[:-1], skip_special_tokens=False).endswith("assistant\n")
               and p[-1] == opener for p in prompts)
    assert all(rec.format.tokenizer.decode(p, skip_special_tokens=False).endswith("assistant\n")
               for p in rec.prompt_ids(histories, "direct"))
    tokens, mask = pad_prompts(prompts, bucket=32, pad_id=rec.format.eos_id)
    # A thought ends at `</think>` or the budget: ending the turn inside it is suppressed.
    thought = generate(rec.model, jnp.asarray(tokens), jnp.asarray(mask), SamplingParams(
        max_new_tokens=5, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, no_repeat_ngram=0,
        stop_tokens=(rec.think_close_id,), suppress_tokens=tuple(rec.format.stop_ids), thought_end=-1, num_samples=1),
        rng=jax.random.key(0), pad_id=rec.format.eos_id)
    continued = []
    for i, prompt in enumerate(prompts):
        ids = np.asarray(thought.tokens)[i, 0, : int(thought.lengths[i, 0])].tolist()
        assert not set(ids) & set(rec.format.stop_ids)
        # The text is the opener and what the model wrote; the search continues after a `</think>` either way.
        assert out.reasoning[i] == rec.format.tokenizer.decode([opener] + ids, skip_special_tokens=False)
        assert out.reasoning[i].startswith("<think>")
        if ids[-1:] != [rec.think_close_id]:
            ids.append(rec.think_close_id)
        continued.append(prompt + ids + rec.format.tokenizer.encode("\n\n", add_special_tokens=False).ids)
    tokens, mask = pad_prompts(continued, bucket=32, pad_id=rec.format.eos_id)
    expected = beam_search(rec.model, jnp.asarray(tokens), jnp.asarray(mask), rec.tables, num_beams=4)
    np.testing.assert_array_equal(out.leaves, expected.leaves)
    assert out.valid.all()


def test_reasoning_eval_measures_every_thought_in_records_and_metrics(setup, tmp_path):
    from sidjax.data.tasks import sid_strings
    from sidjax.eval.reasoning_quality import ItemKinds, assess, summarize
    from sidjax.teacher.evidence import item_kinds

    dataset, rec = setup
    think = SamplingParams(max_new_tokens=6, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                           no_repeat_ngram=0, stop_tokens=(), suppress_tokens=(), thought_end=-1, num_samples=1)
    path = tmp_path / "test.jsonl"
    metrics, _ = evaluate_split(rec, dataset, "test", SearchSettings(beams=4, mode="reasoning", think=think),
                                batch_size=4, ks=(1, 3), max_users=6, samples_path=path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    titles = dataset.titles()
    kinds = ItemKinds(sid_strings(rec.sids), item_kinds(dataset.items))  # "widget", by the titles' head noun
    for r in records:
        history = [h["item"] for h in r["history"]]
        expected = assess(r["reasoning"], [h["sid"] for h in r["history"]], [titles[i] for i in history],
                          rec.catalogue, r["recommendations"][0]["sid"], kinds)
        assert r["reasoning_quality"] == expected
    summary = summarize(r["reasoning_quality"] for r in records)
    assert summary and all(metrics[k] == v for k, v in summary.items())


def test_reasoning_that_cites_history_writes_only_history_sids(setup, tmp_path):
    """With citations="history" every SID a thought writes is one of its own history's (a random model, left
    free, writes SIDs of other items), and the evaluation records it as grounded."""
    from sidjax.eval.reasoning_quality import cited_sids

    dataset, rec = setup
    think = SamplingParams(max_new_tokens=24, temperature=1.5, top_k=0, top_p=1.0, repetition_penalty=1.0,
                           no_repeat_ngram=0, stop_tokens=(), suppress_tokens=(), thought_end=-1, num_samples=1)
    cited = {}
    for citations in ("free", "history"):
        path = tmp_path / f"{citations}.jsonl"
        settings = SearchSettings(beams=4, mode="reasoning", think=think, citations=citations)
        evaluate_split(rec, dataset, "test", settings, batch_size=4, ks=(1, 3), max_users=8, samples_path=path)
        records = [json.loads(line) for line in path.read_text().splitlines()]
        cited[citations] = [(set(cited_sids(r["reasoning"])), {h["sid"] for h in r["history"]}, r["reasoning_quality"])
                            for r in records]
    assert any(sids - history for sids, history, _ in cited["free"])
    assert any(sids for sids, _, _ in cited["history"])
    for sids, history, quality in cited["history"]:
        assert sids <= history
        assert quality["grounded"] == bool(sids)
    with pytest.raises(ValueError, match="citations must be one of"):
        rec.search([[1]], SearchSettings(beams=2, mode="reasoning", think=think, citations="items"))


def test_sampled_thought_paths_merge_by_their_mean_probability(setup):
    """think_paths=3 is the one-thought searches of seeds 0, 1, 2 merged: each SID scores log(mean of its
    probability over them), and each history keeps the thought that gave its first SID the most."""
    _, rec = setup
    think = SamplingParams(max_new_tokens=8, temperature=1.5, top_k=0, top_p=1.0, repetition_penalty=1.0,
                           no_repeat_ngram=0, stop_tokens=(), suppress_tokens=(), thought_end=-1, num_samples=1)
    histories, paths, beams = [[1, 2], [3]], 3, 4
    single = [rec.search(histories, SearchSettings(beams=beams, mode="reasoning", think=think, seed=k))
              for k in range(paths)]
    merged = rec.search(histories, SearchSettings(beams=beams, mode="reasoning", think=think, think_paths=paths))
    assert len({s.reasoning[0] for s in single}) > 1  # the paths sampled different thoughts
    for i in range(len(histories)):
        probs = {}
        for s in single:
            for leaf, score in zip(s.leaves[i][s.valid[i]], s.scores[i][s.valid[i]]):
                probs[int(leaf)] = probs.get(int(leaf), 0.0) + np.exp(float(score)) / paths
        expected = sorted(probs, key=lambda leaf: -probs[leaf])[:beams]
        assert merged.valid[i].all()
        assert merged.leaves[i].tolist() == expected
        np.testing.assert_allclose(merged.scores[i], np.log([probs[leaf] for leaf in expected]), rtol=1e-5)
        np.testing.assert_array_equal(merged.codes[i], rec.trie.leaf_sids[merged.leaves[i]])
        backing = [max((score for leaf, score in zip(s.leaves[i], s.scores[i]) if leaf == expected[0]),
                       default=-np.inf) for s in single]
        assert merged.reasoning[i] == single[int(np.argmax(backing))].reasoning[i]
    greedy = dataclasses.replace(think, temperature=0.0)
    with pytest.raises(ValueError, match="greedy paths are all one"):
        rec.search(histories, SearchSettings(beams=beams, mode="reasoning", think=greedy, think_paths=2))


def test_bad_history_names_it(setup):
    _, rec = setup
    with pytest.raises(ValueError, match="history 1"):
        rec.prompt_ids([[0], [NUM_ITEMS]])


def test_recommend_needs_the_bundle_for_titles(setup):
    _, rec = setup
    with pytest.raises(ValueError, match="needs the bundle"):
        rec.recommend([1, 2])


def compare_meshes():
    """Run in a subprocess with 8 fake devices: a data=8 mesh gives the one-device beams and metrics."""
    import tempfile

    assert jax.device_count() == 8
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for devices, data in ((jax.devices()[:1], 1), (jax.devices(), 8)):
            mesh = make_mesh({"data": data, "fsdp": 1, "tensor": 1}, devices=devices)
            dataset, rec = build(mesh)
            path = Path(tmp) / f"{data}.jsonl"
            metrics, _ = evaluate_split(rec, dataset, "test", SearchSettings(beams=6), batch_size=8, ks=(1, 5),
                                        samples_path=path)
            records = [json.loads(line) for line in path.read_text().splitlines()]
            results.append((metrics, records))
    (m1, one), (m8, eight) = results
    assert m1 == m8, (m1, m8)
    for a, b in zip(one, eight, strict=True):
        assert [x["sid"] for x in a["recommendations"]] == [x["sid"] for x in b["recommendations"]]
        np.testing.assert_allclose([x["score"] for x in a["recommendations"]],
                                   [x["score"] for x in b["recommendations"]], atol=1e-5)
    print("SHARDED_OK", json.dumps(m8))


def test_sharded_eval_on_8_devices_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", "import test_evaluate; test_evaluate.compare_meshes()"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "SHARDED_OK" in proc.stdout


def _save_bundle(stage, rec, model, sids, config, step):
    from sidjax import bundle as bundles
    from sidjax.train import checkpoint as ckpt

    bundles.save(bundles.Bundle(model=model, tokenizer=rec.format.tokenizer, sids=sids,
                                level_offsets=np.asarray(rec.tables.level_offsets), level_sizes=LEVEL_SIZES,
                                tokenizer_config=tokenizer_config(), config=config), stage)
    best = ckpt.BestModel(stage)
    best.save(step, nnx.state(model))
    best.wait()
    best.close()
    bundles.finish(stage, step)


def test_ensemble_of_saved_bundles_searches_the_members_mean(setup, tmp_path):
    from sidjax.configs import base_config
    from sidjax.decode.beam import beam_search
    from sidjax.decode.sample import pad_prompts
    from sidjax.stages.eval import evaluate_bundle

    dataset, rec = setup
    config = base_config()
    config.eval.beams, config.eval.topk, config.eval.batch_size, config.eval.max_users = 6, (1, 6), 2, 4
    other = CausalLM(rec.model.config, rngs=nnx.Rngs(5))
    _save_bundle(tmp_path / "a", rec, rec.model, rec.sids, config, step=3)
    _save_bundle(tmp_path / "b", rec, other, rec.sids, config, step=4)
    results = evaluate_bundle([tmp_path / "a", tmp_path / "b"], config, dataset, tmp_path / "eval")
    assert results["step"] == [3, 4] and results["test"]["users"] == 4

    histories = dataset.splits["test"].histories()[:4]
    tokens, mask = pad_prompts(rec.prompt_ids(histories), bucket=32, pad_id=rec.format.eos_id)
    mean = beam_search((rec.model, other), tokens, mask, rec.tables, num_beams=6)
    records = [json.loads(line) for line in (tmp_path / "eval" / "test.jsonl").read_text().splitlines()]
    expected = [[rec.items(int(leaf)) for leaf in row] for row in np.asarray(mean.leaves)]
    assert [[beam["items"] for beam in r["recommendations"]] for r in records] == expected

    shuffled = np.roll(rec.sids, 1, axis=0)
    _save_bundle(tmp_path / "c", rec, other, shuffled, config, step=4)
    with pytest.raises(ValueError, match="ensemble members must share"):
        evaluate_bundle([tmp_path / "a", tmp_path / "c"], config, dataset, tmp_path / "eval_c")
    ensemble = Recommender((rec.model, other), rec.format, rec.sids, np.asarray(rec.tables.level_offsets),
                           LEVEL_SIZES)
    think = SamplingParams(max_new_tokens=4, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                           no_repeat_ngram=0, stop_tokens=(), suppress_tokens=(), thought_end=-1, num_samples=1)
    with pytest.raises(ValueError, match="direct mode only"):
        ensemble.search([[1, 2]], SearchSettings(beams=2, mode="reasoning", think=think))


def test_saved_bundle_loads_and_evaluates(setup, tmp_path):
    import sidjax
    from sidjax.configs import base_config
    from sidjax.stages.eval import evaluate_bundle

    dataset, rec = setup
    stage = tmp_path / "sft"
    config = base_config()
    _save_bundle(stage, rec, rec.model, rec.sids, config, step=7)

    loaded = sidjax.load(stage)
    assert loaded.bundle.step == 7 and loaded.bundle.level_sizes == LEVEL_SIZES
    assert loaded.bundle.directory == stage and loaded.bundle.config.eval.beams == config.eval.beams
    assert loaded.format.prompt_ids(["hello"]) == rec.format.prompt_ids(["hello"])
    np.testing.assert_array_equal(loaded.sids, rec.sids)
    np.testing.assert_array_equal(loaded.trie.leaf_items, rec.trie.leaf_items)
    loaded.bundle.dataset = dataset
    top = loaded.recommend([1, 2, 3], beams=5)
    direct = rec.search([[1, 2, 3]], SearchSettings(beams=5))
    assert [t["items"] for t in top] == [rec.items(int(leaf)) for leaf in direct.leaves[0]]
    np.testing.assert_allclose([t["score"] for t in top], direct.scores[0], atol=1e-5)
    assert top[0]["titles"] == [dataset.items[i].title for i in top[0]["items"]]

    config.eval.beams, config.eval.topk, config.eval.batch_size, config.eval.max_users = 5, (1, 5), 1, 3
    results = evaluate_bundle(stage, config, dataset, tmp_path / "eval")
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["test"] == results["test"] and saved["step"] == 7
    assert saved["test"]["users"] == 3 and len((tmp_path / "eval" / "test.jsonl").read_text().splitlines()) == 3
    kept = read_ranks(tmp_path / "eval" / RANKS_FILE)  # what experiments.report bootstraps
    records = [json.loads(line) for line in (tmp_path / "eval" / "test.jsonl").read_text().splitlines()]
    assert kept["test"].tolist() == [r["hit_rank"] for r in records] and set(kept) == set(config.eval.splits)
    assert ranking_metrics(kept["test"], (1, 5)) == {k: v for k, v in saved["test"].items() if k != "users"}


def test_recommend_thinks_under_the_runs_reasoning_eval_rules(setup, tmp_path):
    import sidjax
    from sidjax.configs import base_config

    dataset, rec = setup
    config = base_config()
    config.stages = ("data", "sids", "sft", "eval", "eval:reasoning")
    config.entries = {"eval:reasoning": {"mode": "reasoning", "citations": "history", "think_no_repeat_ngram": 3,
                                         "max_think_tokens": 5}}
    _save_bundle(tmp_path / "sft", rec, rec.model, rec.sids, config, step=1)
    loaded = sidjax.load(tmp_path / "sft")
    loaded.bundle.dataset = dataset
    assert loaded.bundle.thinking == {"max_think_tokens": 5, "repetition_penalty": 1.0, "no_repeat_ngram": 3,
                                      "citations": "history"}

    def search(citations, no_repeat_ngram):
        think = SamplingParams(max_new_tokens=5, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                               no_repeat_ngram=no_repeat_ngram, stop_tokens=(), suppress_tokens=(), thought_end=-1,
                               num_samples=1)
        out = rec.search([[1, 2, 3]], SearchSettings(beams=4, mode="reasoning", think=think, citations=citations))
        return out.reasoning[0], [rec.items(int(leaf)) for leaf in out.leaves[0]]

    def recommended(**rules):
        rows = loaded.recommend([1, 2, 3], beams=4, mode="reasoning", **rules)
        return rows[0]["reasoning"], [r["items"] for r in rows]

    assert recommended() == search("history", 3)
    assert recommended(citations="free", no_repeat_ngram=0) == search("free", 0)  # what the caller says wins
    base = config.copy_and_resolve_references()
    base.stages, base.entries = ("data", "sids", "sft"), {}
    _save_bundle(tmp_path / "plain", rec, rec.model, rec.sids, base, step=1)
    assert sidjax.load(tmp_path / "plain").bundle.thinking == {  # no reasoning eval: config.eval's settings
        "max_think_tokens": 256, "repetition_penalty": 1.0, "no_repeat_ngram": 0, "citations": "free"}


def _dense_models(dataset, config, tmp_path):
    """A SASRec and the item Markov chain, saved where the `sasrec` / `markov` stages save them."""
    from sidjax.baselines import markov, sasrec

    dense = sasrec.SasRec(sasrec.SasRecConfig(num_items=NUM_ITEMS, max_len=10, dim=8, layers=1, heads=1),
                          rngs=nnx.Rngs(params=1))
    sasrec.save(dense, tmp_path / "sasrec", step=1)
    chain = markov.fit(dataset.splits["train"], NUM_ITEMS, config.baselines.markov)
    markov.save(chain, tmp_path / "markov")
    return dense, chain


def test_rescored_evaluation_reranks_the_same_beams_by_the_saved_dense_models(setup, tmp_path):
    from sidjax.baselines import markov, sasrec
    from sidjax.configs import base_config
    from sidjax.eval.rescore import DenseRescorer, MarkovScorer, SasRecScorer
    from sidjax.stages.eval import evaluate_bundle

    dataset, rec = setup
    config = base_config()
    config.eval.beams, config.eval.topk, config.eval.batch_size, config.eval.max_users = 6, (1, 6), 2, 4
    config.eval.rescore, config.eval.rescore_weights = ("sasrec", "markov"), (3.0, 0.5)
    _save_bundle(tmp_path / "sft", rec, rec.model, rec.sids, config, step=3)
    dense, chain = _dense_models(dataset, config, tmp_path)
    results = evaluate_bundle(tmp_path / "sft", config, dataset, tmp_path / "eval",
                              rescore_dirs=[tmp_path / "sasrec", tmp_path / "markov"])
    assert results["rescore"] == [{"model": str(tmp_path / "sasrec"), "weight": 3.0},
                                  {"model": str(tmp_path / "markov"), "weight": 0.5}]

    histories = dataset.splits["test"].histories()[:4]
    plain = rec.search(histories, SearchSettings(beams=6))
    items = rec.trie.leaf_items[plain.leaves]
    dense_sid = (3.0 * SasRecScorer(dense).sid_log_probs(histories, items)
                 + 0.5 * MarkovScorer(chain).sid_log_probs(histories, items))
    records = [json.loads(line) for line in (tmp_path / "eval" / "test.jsonl").read_text().splitlines()]
    reordered = 0
    for row, record in enumerate(records):
        fused = plain.scores[row] + dense_sid[row]
        order = np.argsort(-fused, kind="stable")
        assert [b["items"] for b in record["recommendations"]] == [rec.items(int(plain.leaves[row, b])) for b in order]
        np.testing.assert_allclose([b["score"] for b in record["recommendations"]], fused[order], rtol=1e-5)
        reordered += int(not np.array_equal(order, np.arange(6)))
    assert reordered > 0, "weight 3 should reorder some user's beams"

    # experiments.tune_rescore re-sorts the saved beams of an eval without re-scoring: the re-scored eval's ranks.
    from sidjax.eval.rescore_tuning import fused_ranks, read_beams

    config.eval.rescore, config.eval.rescore_weights = (), ()
    evaluate_bundle(tmp_path / "sft", config, dataset, tmp_path / "plain")
    saved, scores, items, sids, targets = read_beams(tmp_path / "plain" / "test.jsonl")
    assert saved == histories
    logs = [SasRecScorer(dense).sid_log_probs(saved, items), MarkovScorer(chain).sid_log_probs(saved, items)]
    np.testing.assert_array_equal(fused_ranks(scores, logs, (3.0, 0.5), sids, targets),
                                  read_ranks(tmp_path / "eval" / RANKS_FILE)["test"])
    np.testing.assert_array_equal(fused_ranks(scores, logs, (0.0, 0.0), sids, targets),
                                  read_ranks(tmp_path / "plain" / RANKS_FILE)["test"])
    other = sasrec.SasRec(sasrec.SasRecConfig(num_items=NUM_ITEMS + 1, max_len=10, dim=8, layers=1, heads=1),
                          rngs=nnx.Rngs(params=1))
    with pytest.raises(ValueError, match="trained on 25 items, the SID table has 24"):
        Recommender(rec.model, rec.format, rec.sids, np.asarray(rec.tables.level_offsets), LEVEL_SIZES,
                    rescorer=DenseRescorer([(SasRecScorer(other), 1.0)]))


def test_rescoring_saved_beams_writes_what_a_rescored_search_writes(setup, tmp_path):
    from sidjax.configs import base_config
    from sidjax.stages.eval import evaluate_bundle, rescore_saved

    dataset, rec = setup
    config = base_config()
    # 13 samples in batches of 4: the last batch is padded, as the search pads it.
    config.eval.beams, config.eval.topk, config.eval.batch_size, config.eval.splits = 6, (1, 6), 4, ("valid", "test")
    _save_bundle(tmp_path / "sft", rec, rec.model, rec.sids, config, step=3)
    _dense_models(dataset, config, tmp_path)
    evaluate_bundle(tmp_path / "sft", config, dataset, tmp_path / "plain")
    config.eval.rescore, config.eval.rescore_weights = ("sasrec", "markov"), (3.0, 0.5)
    dense_dirs = [tmp_path / "sasrec", tmp_path / "markov"]
    searched = evaluate_bundle(tmp_path / "sft", config, dataset, tmp_path / "searched", rescore_dirs=dense_dirs)
    saved = rescore_saved(tmp_path / "plain", config, dataset, tmp_path / "saved", None, dense_dirs)

    assert saved == {**searched, "beams_from": str(tmp_path / "plain")}
    assert json.loads((tmp_path / "saved" / "metrics.json").read_text()) == saved
    searched_ranks = read_ranks(tmp_path / "searched" / RANKS_FILE)
    saved_ranks = read_ranks(tmp_path / "saved" / RANKS_FILE)
    for split in config.eval.splits:
        text = (tmp_path / "saved" / f"{split}.jsonl").read_bytes()
        assert text == (tmp_path / "searched" / f"{split}.jsonl").read_bytes()
        assert text != (tmp_path / "plain" / f"{split}.jsonl").read_bytes(), "weight 3 should reorder some beams"
        np.testing.assert_array_equal(saved_ranks[split], searched_ranks[split])
