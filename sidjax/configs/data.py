"""`config.data`: where the interactions and item text come from."""
import re

import ml_collections

from sidjax.configs.rules import require

SOURCES = ("shipped", "recbole", "minionerec_csv", "lcrec", "amazon2018", "amazon2023", "tfds", "mix")


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # shipped: a dataset inside the package, chosen by `name`: "Industrial_and_Scientific"
    #   (RecBole layout, time split) or "Office" (Amazon 2014 Office Products, LC-Rec layout).
    # recbole: a directory with <name>.{train,valid,test}.inter, <name>.inter.json, <name>.item.json
    #   (+ optional <name>.index.json), flat or in raw/ and index/ folders.
    # minionerec_csv: a directory with the papers' {train,valid,test}/<name>_*.csv
    #   (+ optional <name>.item.json / <name>.index.json in it or its index/ folder).
    # lcrec: a directory with <name>.inter.json ({user: [item ids in time order]}), <name>.item.json
    #   (+ optional <name>.index*.json, the authors' SIDs); no timestamps, so split = "leave_one_out".
    # amazon2018: <path>/<name>_5.json(.gz) (or <name>.json) + meta_<name>.json(.gz).
    # amazon2023: <path>/<name>.jsonl(.gz) + meta_<name>.jsonl(.gz).
    # tfds: the TFDS copy of dataset `name` in `data_dir`, built by `python -m experiments.build_tfds`
    #   from this same section (any other source); every other key must be the build's.
    # mix: several datasets trained as one (sidjax.data.mix): `domains` maps each domain's name to a section
    #   like this one (`domain()`), which says where that domain's data comes from and how it is split.
    c.source = "shipped"
    c.name = "Industrial_and_Scientific"  # the category; file names start with it
    c.path = ""
    c.data_dir = ""  # the TFDS copies: where experiments.build_tfds writes them and source "tfds" reads them
    c.max_history = 10  # samples keep the last <= max_history items before the target
    # time: the source's own split (MiniOneRec's 8:1:1 by target time); leave_one_out: per user, test
    # = last item, valid = second to last, train = every earlier position (TIGER / LC-Rec / LETTER).
    c.split = "time"
    c.index_file = ""  # lcrec: which <name>.index*.json holds the paper SIDs when there are several
    # Raw Amazon processing (amazon2018 / amazon2023 only); see sidjax/data/amazon.py for the rules.
    c.start_date = "2016-10"  # reviews from this date's first instant (UTC) ...
    c.end_date = "2018-11"  # ... to this one's, inclusive
    c.k_core = 5  # iterated: every user and item keeps >= k_core reviews
    c.max_title_words = 20  # longer titles drop their item
    c.split_ratios = (0.8, 0.1, 0.1)  # train / valid / test, by target time
    # mix only: {domain name: domain()}; the domains take item ids (and SID prefixes) in the order of their names
    c.domains = ml_collections.ConfigDict()
    # mix only: each domain's share of the train samples, one weight per domain in the order of their names
    # (resampled with a fixed seed; the total stays the sum); () = each domain's own number of samples.
    c.mixture = ()
    return c


def domain(**overrides) -> ml_collections.ConfigDict:
    """One domain of a mix: a data section of its own (any source but mix), e.g. domain(name="Office")."""
    c = section()
    del c.domains, c.mixture
    c.update(overrides)
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    from sidjax.data.amazon import parse_date
    from sidjax.data.sources import SHIPPED, layout
    from sidjax.data.splits import SPLIT_RULES

    require(c.source in SOURCES, f"{name}.source", f"'{c.source}' is not one of {SOURCES}")
    if c.source == "mix":
        _validate_mix(c, config, name)
        return
    require(not c.get("domains") and not c.get("mixture"), f"{name}.domains",
            f"domains and mixture are for source 'mix', not '{c.source}'")
    require(c.source in ("shipped", "tfds") or bool(c.path), f"{name}.path", f"source '{c.source}' needs a path")
    require(c.source != "tfds" or bool(c.data_dir), f"{name}.data_dir",
            "source 'tfds' needs the directory its copy was built into (python -m experiments.build_tfds)")
    require(bool(c.name), f"{name}.name", "must name the dataset (its files start with it)")
    require(not c.data_dir or re.fullmatch(r"[\w+\-.]+", c.name) is not None, f"{name}.name",
            f"'{c.name}' cannot name a TFDS copy: use letters, digits and _ + - . only")
    require(c.source != "shipped" or c.name in SHIPPED, f"{name}.name",
            f"'{c.name}' is not shipped (shipped: {', '.join(SHIPPED)}); set data.source and data.path")
    require(c.split in SPLIT_RULES, f"{name}.split", f"'{c.split}' is not one of {SPLIT_RULES}")
    require(c.split == "leave_one_out" or layout(c) != "lcrec", f"{name}.split",
            f"'{c.name}' is in the LC-Rec layout, which has no timestamps: use 'leave_one_out'")
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


def _validate_mix(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    names = list(c.domains)
    require(len(names) >= 2, f"{name}.domains", f"source 'mix' needs two or more domains, got {names}")
    for domain_name in names:
        key = f"{name}.domains.{domain_name}"
        sub = c.domains[domain_name]
        require(isinstance(sub, ml_collections.ConfigDict) and "source" in sub, key,
                "must be a data section (sidjax.configs.data.domain(...))")
        require(sub.source != "mix", f"{key}.source", "a domain of a mix cannot be a mix itself")
        validate(sub, config, key)
    require(not c.mixture or (len(c.mixture) == len(names) and min(c.mixture) > 0), f"{name}.mixture",
            f"must be one positive weight per domain ({', '.join(names)}), or () for their natural shares")
