"""`config.data`: where the interactions and item text come from."""
import ml_collections

from sidjax.configs import require

SOURCES = ("shipped", "recbole", "minionerec_csv", "amazon2018", "amazon2023")


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # shipped: the Industrial_and_Scientific files inside the package.
    # recbole: a directory with <name>.{train,valid,test}.inter, <name>.inter.json, <name>.item.json.
    # minionerec_csv: a directory with the papers' {train,valid,test}/*.csv (+ optional index.json).
    # amazon2018 / amazon2023: raw Amazon Reviews files, processed with the papers' rules.
    c.source = "shipped"
    c.name = "Industrial_and_Scientific"
    c.path = ""
    c.max_history = 10
    # Raw Amazon processing (amazon2018 / amazon2023 only).
    c.start_date = "2016-10"
    c.end_date = "2018-11"
    c.k_core = 5
    c.max_title_words = 20
    c.split_ratios = (0.8, 0.1, 0.1)
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    require(c.source in SOURCES, f"{name}.source", f"'{c.source}' is not one of {SOURCES}")
    require(c.source == "shipped" or bool(c.path), f"{name}.path", f"source '{c.source}' needs a path")
    require(c.max_history >= 1, f"{name}.max_history", "must be >= 1")
    require(c.k_core >= 1, f"{name}.k_core", "must be >= 1")
    require(
        len(c.split_ratios) == 3 and abs(sum(c.split_ratios) - 1.0) < 1e-6 and min(c.split_ratios) > 0,
        f"{name}.split_ratios",
        "must be three positive fractions summing to 1",
    )
