"""The `domains` knob of the stage sections that read samples (model stages and eval): which domains of
a mix (`data.source = "mix"`) an entry trains or is scored on, so one run can train on one domain and
evaluate on another (`sidjax.data.mix.restrict`)."""
import ml_collections

from sidjax.configs.rules import require


def add_domains_knob(c: ml_collections.ConfigDict) -> None:
    c.domains = ()  # mix only: the names (keys of data.domains) of the domains this entry uses; () = all


def validate_domains(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    if not c.domains:
        return
    known = tuple(config.data.domains) if config.data.source == "mix" else ()
    require(bool(known), f"{name}.domains", "selects domains of a mix: set data.source = 'mix' and data.domains")
    unknown = [d for d in c.domains if d not in known]
    require(not unknown, f"{name}.domains", f"{unknown} are not domains of data.domains ({', '.join(known)})")
