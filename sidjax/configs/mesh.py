"""`config.mesh`: device mesh axis sizes (data, fsdp, tensor); one may be -1 (all remaining devices)."""
import ml_collections

from sidjax.configs.rules import require


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = -1
    c.fsdp = 1
    c.tensor = 1
    # Memory plan (sidjax.parallel.memory): activations kept for the backward pass per layer:
    # none (all), dots (matmul outputs), full (layer inputs only; the layer is recomputed).
    c.remat = "none"
    c.device_memory_gib = 0.0  # per device; 0 = what the device reports (CPU: its share of host RAM)
    c.memory_margin = 0.1  # fraction kept free for XLA workspace and fragmentation
    return c


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    sizes = {axis: c[axis] for axis in ("data", "fsdp", "tensor")}
    for axis, size in sizes.items():
        require(size == -1 or size >= 1, f"{name}.{axis}", f"must be >= 1 or -1, got {size}")
    require(list(sizes.values()).count(-1) <= 1, name, f"at most one axis may be -1, got {sizes}")
    from sidjax.model.config import REMAT

    require(c.remat in REMAT, f"{name}.remat", f"must be one of {REMAT}, got '{c.remat}'")
    require(c.device_memory_gib >= 0, f"{name}.device_memory_gib", "must be >= 0 (0 = ask the device)")
    require(0 <= c.memory_margin < 1, f"{name}.memory_margin", f"must be in [0, 1), got {c.memory_margin}")
