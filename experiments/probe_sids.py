"""Does a stage's model know what its SIDs stand for? python -m experiments.probe_sids --config=C --workdir=DIR --model=sft

For the most recent history item of the first `--users` samples of `--split`, the model (the stage entry
`--model` of `--workdir`) decodes a title from the item's SID with its own task-2 prompt, greedily; a
title scores when it names the item's kind, its brand, or is its title (`sidjax.eval.sid_probe`). It
prints the shares and the first `--show` titles beside the items', and writes every title to
`<workdir>/evals/sid_probe_<model>_<split>.json`. Chat-style models only: a SID-sequence model never
learned the task.
"""
import json
from pathlib import Path

from absl import flags, logging

import sidjax
from experiments.launch import WORKDIR, run, start
from sidjax.data.sources import load_dataset
from sidjax.eval import sid_probe
from sidjax.stages import stage_dirname
from sidjax.stages.eval import find_bundle

_MODEL = flags.DEFINE_string("model", "sft", "The model stage entry of --workdir whose SIDs are probed.")
_SPLIT = flags.DEFINE_string("split", "test", "The split whose samples' latest items are probed.")
_USERS = flags.DEFINE_integer("users", 200, "How many of the split's first samples (one item each).")
_SHOW = flags.DEFINE_integer("show", 4, "How many decoded titles to print.")


def main(argv) -> None:
    config = start(argv)
    workdir = Path(WORKDIR.value)
    dataset = load_dataset(config.data)
    if _SPLIT.value not in dataset.splits:
        raise ValueError(f"--split: '{_SPLIT.value}' is not one of {sorted(dataset.splits)}")
    if _USERS.value <= 0:
        raise ValueError(f"--users must be > 0, got {_USERS.value}")
    rec = sidjax.load(find_bundle(workdir / stage_dirname(_MODEL.value)))
    items = sid_probe.latest_items(dataset.splits[_SPLIT.value], _USERS.value)
    logging.info("probing %d items of %s with %s", len(items), _SPLIT.value, _MODEL.value)
    guesses = sid_probe.probe_titles(rec, dataset, items)
    summary = sid_probe.summarize(guesses)
    for g in guesses[:_SHOW.value]:
        print(f"  {dataset.items[g.item].title[:70]!r} -> {g.title[:70]!r}")
    print(f"{_MODEL.value}, {_SPLIT.value}: {len(guesses)} items; the decoded title names the kind "
          f"{summary['kind']:.3f}, the brand {summary['brand']:.3f}, is the title {summary['exact']:.3f}")
    out = workdir / "evals" / f"sid_probe_{stage_dirname(_MODEL.value)}_{_SPLIT.value}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": _MODEL.value, "split": _SPLIT.value, "summary": summary,
                               "titles": [vars(g) for g in guesses]}, indent=1))
    print(f"every title: {out}")


if __name__ == "__main__":
    run(main)
