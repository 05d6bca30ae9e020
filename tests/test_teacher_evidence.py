"""The offline teacher's data-grounded reasoning (GREAM's curriculum): kinds, train-split counts, the five steps."""
import dataclasses
import re

from sidjax.configs.sft import mixture_knobs
from sidjax.data import tasks
from sidjax.data.corpus import Corpus
from sidjax.data.dataset import RecDataset, Split
from sidjax.data.tasks import sid_strings
from sidjax.eval.reasoning_quality import has_loop
from sidjax.teacher.evidence import Evidence, item_kinds
from sidjax.teacher.offline import user_text, write_offline
from sidjax.utils.catalog import Item
from sidjax.utils.settings import settings_from
from test_tasks import tiny_dataset, tiny_item_sids


def test_kinds_read_categories_else_the_title_head_noun():
    items = [
        Item("VTECH CS6114 DECT 6.0 Cordless Phone, White", brand="VTech",
             categories="Office Electronics, Telephones & Accessories, Cordless Telephones"),
        Item("3D Solutech Real Black 3D Printer PLA Filament 1.75MM, Dimensional Accuracy", brand="3D Solutech"),
        Item("HATCHBOX PLA 3D Printer Filament, 1 kg Spool", brand="HATCHBOX"),
        Item("Gorilla Super Glue Gel, 20 g, Clear", brand="Gorilla"),
        Item("Acme AB-1234", description="A strong clamp for wood.", brand="Acme"),
        Item("XYZ-12 9000"),
        Item("Loctite Glue Stick", brand="Loctite"),
        Item("Elmer's Glue, 4 oz", brand="Elmer's"),
    ]
    kinds = item_kinds(items)
    assert kinds[0] == "cordless telephones"  # the leaf category
    assert kinds[1] == kinds[2] == "filament"  # brand words, colours and sizes are not kinds
    # "gel" and "stick" end their heads but fewer than 3 titles have them: the head's most shared word instead
    assert kinds[3] == kinds[6] == kinds[7] == "glue"
    assert kinds[4] == "clamp"  # no title word: the description's
    assert kinds[5] == "product"


def _dataset() -> RecDataset:
    items = (
        Item("Red PLA Filament", brand="Hatch"),  # 0
        Item("Blue PLA Filament", brand="Hatch"),  # 1
        Item("Super Glue", brand="Gorilla"),  # 2
        Item("Wood Glue", brand="Titebond"),  # 3
        Item("Spring Clamp", brand="Irwin"),  # 4
    )
    splits = {
        "train": Split.from_rows([(0, [0], 1), (0, [0, 1], 2), (1, [1], 2), (2, [3], 4)], max_history=4),
        "valid": Split.from_rows([(0, [0, 1, 2], 3)], max_history=4),
        "test": Split.from_rows([(0, [0, 1, 2, 3], 4)], max_history=4),
    }
    sequences = {0: (0, 1, 2, 3, 4), 1: (1, 2), 2: (3, 4)}
    return RecDataset(name="kinds", items=items, sequences=sequences, splits=splits).check("kinds")


SIDS = [[0, 0, 0], [0, 0, 1], [1, 2, 0], [1, 3, 0], [2, 0, 0]]


def test_transitions_count_the_train_split_only():
    dataset = _dataset()
    evidence = Evidence.from_train(dataset)
    assert evidence.kinds == ("filament", "filament", "glue", "glue", "clamp")
    # train: filament->filament, filament->glue, filament->glue, glue->clamp; valid's glue->glue is not counted
    assert evidence.transition("filament", "glue") == (2, 3)
    assert evidence.transition("glue", "glue") == (0, 1)
    assert evidence.transition("clamp", "glue") == (0, 0)
    assert evidence.common_brand([0, 1, 2]) == "Hatch" and evidence.common_brand([2, 3]) == ""
    assert evidence.common_kind([2, 0, 1]) == "filament" and evidence.common_kind([0, 2]) == "glue"


def test_the_five_steps_name_items_by_sid_only_and_describe_the_target():
    dataset = _dataset()
    sids = sid_strings(SIDS)
    evidence = Evidence.from_train(dataset)
    text = user_text("valid", 0, 0, [0, 1, 2], 3, dataset, sids, evidence)
    steps = text.reasoning.split("\n")
    assert [re.sub(r"^\d\. (\w+).*", r"\1", s) for s in steps] == ["Evidence", "Preference", "Intent",
                                                                     "Recommendation", "Items"]
    assert steps[0] == (f"1. Evidence: the recent items are glue from Gorilla ({sids[2]}); "
                        f"filament from Hatch ({sids[1]}, {sids[0]}).")
    assert steps[1] == "2. Preference: the user mostly buys filament and trusts Hatch."
    assert steps[2] == ("3. Intent: next the user needs more glue; in the training data a glue came next after "
                        "a glue in 0 of 1 purchases.")
    assert steps[3] == "4. Recommendation: a glue from Titebond."
    assert steps[4] == f"5. Items that matter: {sids[2]}."  # the history item of the target's kind
    assert sids[3] not in text.reasoning  # the target is described, not named
    assert not any(item.title.lower() in text.reasoning.lower() for item in dataset.items)
    assert text.narrative.endswith(f"The next item is {sids[3]}.")


def test_a_repeat_purchase_is_recommended_by_its_sid():
    dataset = _dataset()
    sids = sid_strings(SIDS)
    text = user_text("train", 0, 0, [0, 1], 1, dataset, sids, Evidence.from_train(dataset))
    assert f"4. Recommendation: buy {sids[1]} again." in text.reasoning
    assert f"5. Items that matter: {sids[0]}, {sids[1]}." in text.reasoning


def test_no_valid_or_test_sample_reaches_the_train_mixture_through_the_corpus():
    """The teacher writes valid records too (reason_sft's valid loss): none may enter training, and the
    offline teacher's statistics count train samples only (valid/test targets 2, 3, 6, 7 never follow)."""
    dataset, sids = tiny_dataset(), tiny_item_sids()
    rows = [(s, r) for s in ("train", "valid") for r in range(len(dataset.splits[s]))]
    items, users = write_offline(dataset, sids, range(dataset.num_items), rows)
    corpus = Corpus(path=None, items={t.item: t for t in items}, users={(u.split, u.index): u for u in users},
                    manifest={"template": True})
    valid_texts = {u.reasoning for u in users if u.split == "valid"} | {u.narrative for u in users if u.split == "valid"}
    for stage, task in (("reason_sft", tasks.REASONING), ("sft", tasks.USER_NARRATIVE)):
        mixture = settings_from(tasks.TaskMixture, mixture_knobs(stage))
        mixture = dataclasses.replace(mixture, tasks={task: -1})
        train = tasks.build_mixture(mixture, dataset, sids, "train", corpus)
        assert len(train) == len(dataset.splits["train"])
        assert not any(text in e.target for e in train for text in valid_texts)
    evidence = Evidence.from_train(dataset)
    train_pairs = sum(sum(c.values()) for c in evidence.follows.values())
    assert train_pairs == len(dataset.splits["train"])


def test_items_of_one_kind_share_one_clause_so_the_teacher_never_loops():
    items = tuple(Item(f"{c} Duct Tape", brand=b) for c, b in (("Red", "Scotch"), ("Blue", "Gorilla"),
                                                               ("Grey", "Duck"), ("Black", "Tesa")))
    splits = {name: Split.from_rows([(0, [0, 1, 2], 3)], max_history=4) for name in ("train", "valid", "test")}
    dataset = RecDataset(name="tape", items=items, sequences={0: (0, 1, 2, 3)}, splits=splits).check("tape")
    sids = sid_strings([[0, 0, k] for k in range(4)])
    text = user_text("train", 0, 0, [0, 1, 2], 3, dataset, sids, Evidence.from_train(dataset)).reasoning
    assert (f"1. Evidence: the recent items are tape from Duck, Gorilla and Scotch "
            f"({sids[2]}, {sids[1]}, {sids[0]}).") in text
    assert not has_loop(text.split())


def test_without_the_target_the_reasoning_is_a_function_of_the_history_and_train_counts():
    dataset = _dataset()
    sids = sid_strings(SIDS)
    evidence = Evidence.from_train(dataset)
    # train: after a filament came a glue 2 of 3 times; the user's latest glue is Gorilla's
    assert evidence.likely_next_kind("filament") == "glue" and evidence.likely_next_kind("clamp") == "clamp"
    texts = [user_text("train", 0, 0, [2, 0, 1], target, dataset, sids, evidence, explain_target=False)
             for target in (1, 3, 4)]
    assert len({t.reasoning for t in texts}) == 1  # whatever came next
    steps = texts[0].reasoning.split("\n")
    assert steps[2] == ("3. Intent: next the user needs a glue; in the training data a glue came next after a "
                        "filament in 2 of 3 purchases.")
    assert steps[3] == "4. Recommendation: a glue from Gorilla."
    assert steps[4] == f"5. Items that matter: {sids[2]}."
    # a repeat is not guessed; the narrative (task 8) still tells what came next
    assert "again" not in texts[0].reasoning
    assert texts[0].narrative.endswith(f"next they need a filament. The next item is {sids[1]}.")
