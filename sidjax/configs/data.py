"""`config.data`: where the interactions and item text come from."""
import ml_collections

from sidjax.configs.rules import require

SOURCES = ("shipped", "recbole", "minionerec_csv", "amazon2018", "amazon2023")


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # shipped: the Industrial_and_Scientific files inside the package.
    # recbole: a directory with <name>.{train,valid,test}.inter, <name>.inter.json, <name>.item.json
    #   (+ optional <name>.index.json), flat or in raw/ and index/ folders.
    # minionerec_csv: a directory with the papers' {train,valid,test}/<name>_*.csv
    #   (+ optional <name>.item.json / <name>.index.json in it or its index/ folder).
    # amazon2018: <path>/<name>_5.json(.gz) (or <name>.json) + meta_<name>.json(.gz).
    # amazon2023: <path>/<name>.jsonl(.gz) + meta_<name>.jsonl(.gz).
    c.source = "shipped"
    c.name = "Industrial_and_Scientific"  # the category; file names start with it
    c.path = ""
    c.max_history = 10  # samples keep the last <= max_history items before the target
    # Raw Amazon processing (amazon2018 / amazon2023 only); see sidjax/data/amazon.py for the rules.
    c.start_date = "2016-10"  # reviews from this date's first instant (UTC) ...
    c.end_date = "2018-11"  # ... to this one's, inclusive
    c.k_core = 5  # iterated: every user and item keeps >= k_core reviews
    c.max_title_words = 20  # longer titles drop their item
    c.split_ratios = (0.8, 0.1, 0.1)  # train / valid / test, by target time
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    from sidjax.data.amazon import parse_date

    require(c.source in SOURCES, f"{name}.source", f"'{c.source}' is not one of {SOURCES}")
    require(c.source == "shipped" or bool(c.path), f"{name}.path", f"source '{c.source}' needs a path")
    require(bool(c.name), f"{name}.name", "must name the dataset (its files start with it)")
    require(c.max_history >= 1, f"{name}.max_history", "must be >= 1")
    require(c.k_core >= 1, f"{name}.k_core", "must be >= 1")
    require(c.max_title_words >= 1, f"{name}.max_title_words", "must be >= 1")
    require(
        len(c.split_ratios) == 3 and abs(sum(c.split_ratios) - 1.0) < 1e-6 and min(c.split_ratios) > 0,
        f"{name}.split_ratios",
        "must be three positive fractions summing to 1",
    )
    dates = {}
    for key in ("start_date", "end_date"):
        try:
            dates[key] = parse_date(c[key])
        except ValueError as e:
            require(False, f"{name}.{key}", str(e))
    require(dates["start_date"] <= dates["end_date"], f"{name}.end_date",
            f"'{c.end_date}' is before start_date '{c.start_date}'")
