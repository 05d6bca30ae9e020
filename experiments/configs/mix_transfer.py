"""Two domains in one model, and what one domain's training is worth to the other.

Industrial_and_Scientific (time split, 10-item histories) and Office (Amazon 2014, leave-one-out,
20-item histories) as one mix (`data.source = "mix"`). One RQ-KMeans over both catalogues' text
gives SIDs whose codes mean the same kind of item in either domain, behind a first level naming
the domain (`<a_0>` Industrial, `<a_1>` Office; `sidjax.stages.sids`). Every model is
industrial_scratch's SID-sequence decoder (4 layers, width 192, its SFT settings) with the same number of SFT
steps per domain trained (`STEPS`), so the arms compare at equal compute:

    sft:joint        both domains at once, 2 x STEPS (each domain's natural share of the samples)
    sft:ind          Industrial alone          -> scored on Industrial, and zero-shot on Office
    sft:office       Office alone              -> scored on Office (the target-only reference)
    sft:ind_office   sft:ind, then STEPS more on Office (twice the compute of sft:office)
    sft:office_2x    Office alone for 2 x STEPS (the same compute as sft:ind + sft:ind_office)

Every eval ranks the scored domain's own catalogue (its subtree of the trie) with beam 20 on
valid and test, HR/NDCG@{5,10,20}. Table and command: README, "Two domains".

    python -m experiments.train --config=experiments/configs/mix_transfer.py --workdir=runs/mix_transfer
"""
import ml_collections

from experiments.configs import industrial_scratch
from sidjax.configs.data import domain

IND, OFFICE = "Industrial_and_Scientific", "Office"
STEPS = 1000  # SFT steps of an arm on one domain (sft:joint and sft:office_2x: twice); batch 64


def get_config():
    # industrial_scratch's model and SFT (its GRPO, second lineage and re-scorers are not used here).
    config = industrial_scratch.get_config()
    config.name = "mix_transfer"
    config.stages = ("data", "sids",
                     "sft:joint", "eval:joint",
                     "sft:ind", "eval:ind", "sft:office", "eval:office",
                     "sft:ind_office", "eval:ind_office", "sft:office_2x", "eval:office_2x")
    on_office = {"domains": (OFFICE,)}
    config.entries = {
        "sft:joint": {"max_steps": 2 * STEPS},
        "sft:ind": {"domains": (IND,)},
        "sft:office": on_office,
        "sft:ind_office": {"init_from": "sft:ind", "warmup_steps": 0, **on_office},
        "sft:office_2x": {"max_steps": 2 * STEPS, **on_office},
        "eval:joint": {"models": ("sft:joint",)},
        "eval:ind": {"models": ("sft:ind",)},  # both domains: Industrial, and Office zero-shot
        "eval:office": {"models": ("sft:office",), **on_office},
        "eval:ind_office": {"models": ("sft:ind_office",), **on_office},
        "eval:office_2x": {"models": ("sft:office_2x",), **on_office},
    }

    config.data.source = "mix"
    config.data.domains = ml_collections.ConfigDict({
        IND: domain(name=IND),
        OFFICE: domain(name=OFFICE, split="leave_one_out", max_history=20),
    })

    # One quantizer over both catalogues (6,106 items): 3 levels of 256 codes, then the domain prefix.
    config.sids.source = "rqkmeans"

    config.sft.length_buckets = (16, 32, 48, 64, 88)  # 4 tokens an item; <= 21 items a sequence
    config.sft.epochs = 1000  # the arms stop at max_steps, not at an epoch count
    config.sft.max_steps = STEPS
    config.sft.patience = 0
    config.sft.checkpoint_every = 500
    config.sft.log_every = 100

    config.eval.beams = 20
    config.eval.topk = (5, 10, 20)
    config.eval.batch_size = 64
    config.eval.rescore = ()
    config.eval.rescore_weights = ()
    return config
