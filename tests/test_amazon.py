"""Raw Amazon files -> samples: every rule checked on small hand-made files, plus a plain-Python parity run."""
import datetime
import gzip
import json
import random

import numpy as np
import pytest

from sidjax.configs import base_config
from sidjax.data import amazon, minionerec
from sidjax.data.sources import load_dataset, shipped_dir
from sidjax.utils.errors import DataError

DAY = 86400
T0 = int(datetime.datetime(2017, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
START = int(datetime.datetime(2016, 10, 1, tzinfo=datetime.timezone.utc).timestamp())
END = int(datetime.datetime(2018, 11, 1, tzinfo=datetime.timezone.utc).timestamp())


def rules(**changes) -> amazon.Rules:
    base = dict(start_date="2016-10", end_date="2018-11", k_core=1, max_title_words=20, max_history=10,
                split_ratios=(0.8, 0.1, 0.1))
    return amazon.Rules(**{**base, **changes})


def write_lines(path, records, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(str(path) + ".gz", "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def write_2018(directory, reviews, titles, name="Cat", gz=False):
    """reviews: (user, asin, unix seconds); titles: {asin: title or None (no title field)}."""
    write_lines(directory / f"{name}_5.json",
                [{"reviewerID": u, "asin": a, "unixReviewTime": t, "overall": 5.0} for u, a, t in reviews], gz)
    metas = [{"asin": a, **({} if t is None else {"title": t})} for a, t in titles.items()]
    write_lines(directory / f"meta_{name}.json", metas, gz)


def load(directory, version="amazon2018", name="Cat", **changes):
    return amazon.load_raw(directory, name, rules(**changes), version)


def one_user_chain(asins, user="U"):
    return [(user, a, T0 + i * DAY) for i, a in enumerate(asins)]


def test_title_rules(tmp_path):
    titles = {
        "ok1": "Good Widget",
        "none": None,
        "html": 'Thing <span id="x">garbage</span>',
        "one": "X",
        "long": " ".join(["w"] * 21),
        "twenty": " ".join(["w"] * 20),
        "quoted": "&quot;Big &amp; Small&quot; ",
        "ok2": "Another Widget",
    }
    asins = list(titles) + ["no_meta"]
    write_2018(tmp_path, one_user_chain(asins), titles)
    ds = load(tmp_path, split_ratios=(0.4, 0.3, 0.3))
    assert ds.titles() == ["Good Widget", " ".join(["w"] * 20), "Big & Small", "Another Widget"]
    assert ds.sequences == {0: (0, 1, 2, 3)}


def test_repeated_meta_records_keep_the_last_valid_title(tmp_path):
    write_2018(tmp_path, one_user_chain(["a", "b", "c", "d"]), {})
    metas = [{"asin": "a", "title": "First title"}, {"asin": "a", "title": "Second title"},
             {"asin": "b", "title": "Valid title"}, {"asin": "b", "title": "<span id=2>"}, {"asin": "b"},
             {"asin": "c", "title": "Cee cee"}, {"asin": "d", "title": "Dee dee"}]
    write_lines(tmp_path / "meta_Cat.json", metas)
    ds = load(tmp_path, split_ratios=(0.4, 0.3, 0.3))
    assert ds.titles() == ["Second title", "Valid title", "Cee cee", "Dee dee"]


def test_title_word_limit_is_a_knob(tmp_path):
    titles = {"a": "one two three", "b": "one two", "c": "uno dos", "d": "eins zwei", "e": "un deux"}
    write_2018(tmp_path, one_user_chain(list(titles)), titles)
    ds = load(tmp_path, max_title_words=2, split_ratios=(0.4, 0.3, 0.3))
    assert "one two three" not in ds.titles() and len(ds.titles()) == 4


def test_time_window_is_inclusive_at_both_ends(tmp_path):
    times = {"before": START - 1, "at_start": START, "middle": T0, "late": T0 + DAY, "at_end": END, "after": END + 1}
    titles = {a: f"Item {a}" for a in times}
    write_2018(tmp_path, [("U", a, t) for a, t in times.items()], titles)
    ds = load(tmp_path, split_ratios=(0.4, 0.3, 0.3))
    assert ds.titles() == ["Item at_start", "Item middle", "Item late", "Item at_end"]


def test_window_dates_may_name_days(tmp_path):
    times = {"a": T0 - DAY, "b": T0, "c": T0 + DAY, "d": T0 + 2 * DAY, "e": T0 + 3 * DAY}
    write_2018(tmp_path, [("U", a, t) for a, t in times.items()], {a: f"Item {a}" for a in times})
    ds = load(tmp_path, start_date="2017-01-01", end_date="2017-01-04", split_ratios=(0.4, 0.3, 0.3))
    assert ds.titles() == ["Item b", "Item c", "Item d", "Item e"]


def test_k_core_is_iterated_until_stable():
    # k = 2. Item "x" has one review -> dropped; then user "v" (x, y) has one review left -> dropped;
    # then item "y" (v, w) has one review -> dropped; then user "w" (y, z1) -> dropped; then item "z1"
    # (w, a) -> dropped. A single pass would keep v, w, y and z1.
    r = amazon.Review
    reviews = [r("v", "x", 1), r("v", "y", 2), r("w", "y", 3), r("w", "z1", 4)]
    core = [r(u, i, 10 + n) for n, (u, i) in enumerate([("a", "p"), ("a", "q"), ("b", "p"), ("b", "q")])]
    core += [r("a", "z1", 20)]
    kept = amazon.k_core(reviews + core, 2)
    assert kept == core[:4]
    assert amazon.k_core(kept, 2) == kept
    repeat = [r("u", "i", 1), r("u", "i", 2)]
    assert amazon.k_core(repeat, 2) == repeat, "repeat reviews count"


def test_k_core_from_files(tmp_path):
    reviews = [(u, i, T0 + n) for n, (u, i) in enumerate(
        [("a", "p"), ("a", "q"), ("b", "p"), ("b", "q"), ("c", "p"), ("c", "q"), ("c", "lone"), ("d", "p")])]
    write_2018(tmp_path, reviews, {a: f"Item {a}" for a in ("p", "q", "lone")})
    ds = load(tmp_path, k_core=2, split_ratios=(0.34, 0.33, 0.33))
    assert ds.titles() == ["Item p", "Item q"]
    assert len(ds.sequences) == 3  # d has one review of p


def test_sliding_windows_ids_and_repeats(tmp_path):
    # user B reviews first in the file, so B is user 0; items are numbered walking B's time-sorted
    # reviews, then A's. A's reviews are written out of time order.
    reviews = [("B", "i3", T0 + 50), ("B", "i1", T0 + 40)]
    a_items = ["i1", "i2", "i3", "i2", "i4", "i5"]
    reviews += [("A", a, T0 + 10 * k) for k, a in reversed(list(enumerate(a_items)))]
    titles = {f"i{k}": f"Item {k}" for k in range(1, 6)}
    write_2018(tmp_path, reviews, titles)
    ds = load(tmp_path, max_history=3, split_ratios=(0.34, 0.33, 0.33))
    assert ds.titles() == ["Item 1", "Item 3", "Item 2", "Item 4", "Item 5"]
    assert ds.sequences == {0: (0, 1), 1: (0, 2, 1, 2, 3, 4)}
    got = []
    for s in ("train", "valid", "test"):
        split = ds.splits[s]
        got += list(zip(split.users.tolist(), split.histories(), split.target.tolist()))
    # Sorted by target time, stably: B's target (T0+50) ties with A's last one and B is user 0, so B's first.
    assert got == [
        (1, [0], 2),
        (1, [0, 2], 1),
        (1, [0, 2, 1], 2),
        (1, [2, 1, 2], 3),
        (0, [0], 1),
        (1, [1, 2, 3], 4),
    ]
    assert ds.splits["train"].history.shape == (2, 3)


def test_split_points_follow_the_papers():
    assert amazon.split_points(45324, (0.8, 0.1, 0.1)) == (36259, 40791)
    assert amazon.split_points(10, (0.8, 0.1, 0.1)) == (8, 9)
    for n in range(10, 400):
        assert amazon.split_points(n, (0.8, 0.1, 0.1)) == (int(n * 0.8), int(n * 0.9))


def test_amazon2023_jsonl_gz_millisecond_times(tmp_path):
    base_ms = T0 * 1000
    reviews = [{"user_id": "U", "parent_asin": f"p{k}", "asin": f"child{k}", "timestamp": base_ms + k * 1000,
                "rating": 4.0} for k in range(5)]
    reviews.append({"user_id": "U", "parent_asin": "p9", "timestamp": END * 1000 + 1})  # after the window
    write_lines(tmp_path / "Cat.jsonl", reviews, gz=True)
    metas = [{"parent_asin": f"p{k}", "title": f"Thing {k}", "store": "Acme", "categories": ["Tools", "Glue"],
              "description": ["<b>Strong</b> glue.", "Dries &amp; holds."]} for k in (*range(5), 9)]
    write_lines(tmp_path / "meta_Cat.jsonl", metas, gz=True)
    ds = load(tmp_path, version="amazon2023", split_ratios=(0.5, 0.25, 0.25))
    assert ds.titles() == [f"Thing {k}" for k in range(5)]
    item = ds.items[0]
    assert (item.brand, item.categories, item.description) == ("Acme", "Tools, Glue", "Strong glue. Dries & holds.")


def test_sources_wiring_and_2018_fallback_review_file(tmp_path):
    reviews = one_user_chain(["a", "b", "c", "d"])
    write_lines(tmp_path / "Cat.json", [{"reviewerID": u, "asin": a, "unixReviewTime": t} for u, a, t in reviews])
    write_lines(tmp_path / "meta_Cat.json",
                [{"asin": a, "title": f"T {a}", "brand": "B", "category": ["X", "<span>junk</span>"]} for a in "abcd"])
    cfg = base_config().data
    with cfg.unlocked():
        cfg.source, cfg.path, cfg.name, cfg.split_ratios = "amazon2018", str(tmp_path), "Cat", (0.34, 0.33, 0.33)
        cfg.k_core = 1
    ds = load_dataset(cfg)
    assert ds.statistics()["train_samples"] == 1 and ds.items[0].brand == "B"


def test_bad_raw_input_names_file_line_and_field(tmp_path):
    with pytest.raises(DataError, match=r"Cat_5\.json: file not found"):
        load(tmp_path)
    write_2018(tmp_path, one_user_chain(["a", "b"]), {"a": "A a", "b": "B b"})
    path = tmp_path / "Cat_5.json"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(DataError, match=r"Cat_5\.json:3: invalid JSON"):
        load(tmp_path)
    path.write_text('{"reviewerID": "U", "asin": "a"}\n')
    with pytest.raises(DataError, match=r"Cat_5\.json:1: field 'unixReviewTime': is missing"):
        load(tmp_path)
    path.write_text('{"reviewerID": "U", "asin": "a", "unixReviewTime": "soon"}\n')
    with pytest.raises(DataError, match=r"Cat_5\.json:1: field 'unixReviewTime': expected int"):
        load(tmp_path)
    write_2018(tmp_path, one_user_chain(["a", "b"]), {"a": "A a", "b": "B b"})
    with pytest.raises(DataError, match=r"split 'train' is empty"):
        load(tmp_path)
    with pytest.raises(DataError, match=r"no reviews left"):
        load(tmp_path, k_core=3)


# ---- parity with a plain-Python transcription of the papers' procedure --------------------------------


def reference(reviews, titles, k, start, end, max_words, max_history):
    """Upstream's loop structure: title dict, k-core passes with remove sets, windows, sort, 8:1:1."""
    id_title = {}
    for asin, title in titles.items():
        if title is None or "<span id" in title:
            continue
        t = title.replace("&quot;", '"').replace("&amp;", "&").strip(" ").strip('"')
        if len(t) > 1 and len(t.split(" ")) <= max_words:
            id_title[asin] = t
    remove_users, remove_items = set(), {r[1] for r in reviews if r[1] not in id_title}
    while True:
        new, flag, uc, ic = [], False, {}, {}
        for r in reviews:
            if r[2] < start or r[2] > end or r[0] in remove_users or r[1] in remove_items:
                continue
            uc[r[0]] = uc.get(r[0], 0) + 1
            ic[r[1]] = ic.get(r[1], 0) + 1
            new.append(r)
        for u, c in uc.items():
            if c < k:
                remove_users.add(u)
                flag = True
        for i, c in ic.items():
            if c < k:
                remove_items.add(i)
                flag = True
        if not flag:
            break
        reviews = new
    per_user = {}
    for r in new:
        per_user.setdefault(r[0], []).append(r)
    user_index, item_index, samples = {}, {}, []
    for u, rs in per_user.items():
        user_index[u] = len(user_index)
        rs.sort(key=lambda r: r[2])
        for r in rs:
            item_index.setdefault(r[1], len(item_index))
    for u, rs in per_user.items():
        ids = [item_index[r[1]] for r in rs]
        for i in range(1, len(rs)):
            samples.append((user_index[u], ids[max(i - max_history, 0):i], ids[i], rs[i][2]))
    samples.sort(key=lambda s: s[3])
    a, b = int(len(samples) * 0.8), int(len(samples) * 0.9)
    titles_by_id = {i: id_title[a_] for a_, i in item_index.items()}
    return [samples[:a], samples[a:b], samples[b:]], [titles_by_id[i] for i in range(len(titles_by_id))]


def test_parity_with_plain_python_reference(tmp_path):
    rng = random.Random(0)
    asins = [f"B{k:03d}" for k in range(40)]
    titles = {a: rng.choice([f"Widget {a}", f"Widget {a}", None, "Z", "<span id=1>", " ".join(["w"] * 25)])
              for a in asins}
    reviews = []
    for u in range(200):
        for _ in range(rng.randint(2, 12)):
            t = rng.randint(START - 30 * DAY, END + 30 * DAY) // (5 * DAY) * (5 * DAY)  # many equal times
            reviews.append((f"U{u}", rng.choice(asins[: rng.randint(5, 40)]), t))
    write_2018(tmp_path, reviews, titles)
    ds = load(tmp_path, k_core=3, max_history=4)
    splits, ref_titles = reference(reviews, titles, 3, START, END, 20, 4)
    assert ds.titles() == ref_titles
    assert len(ds.splits["train"]) > 50
    for name, expected in zip(("train", "valid", "test"), splits):
        s = ds.splits[name]
        got = list(zip(s.users.tolist(), s.histories(), s.target.tolist()))
        assert got == [(u, h, t) for u, h, t, _ in expected]
    np.testing.assert_array_equal(ds.splits["test"].history_len, [len(h) for _, h, _, _ in splits[2]])


def test_item_numbering_rule_matches_the_shipped_data():
    """Rule 4 reproduces the upstream ids: walking users in order, items appear as 0, 1, 2, ..."""
    sequences = minionerec.read_sequences(shipped_dir() / "Industrial_and_Scientific.inter.json")
    first_seen = {}
    for user in sorted(sequences):
        for item in sequences[user]:
            first_seen.setdefault(item, len(first_seen))
    assert list(first_seen) == list(range(3686))
