"""The memory check a model stage runs before it compiles: its workload read from the config,
and a refusal that names the config keys to change (`sidjax.parallel.memory` plans in plain numbers)."""
from __future__ import annotations

import jax
import ml_collections

from sidjax.configs.lineage import stage_remat
from sidjax.configs.sids import sid_length
from sidjax.model.config import ModelConfig
from sidjax.parallel import memory


def stage_workload(config: ml_collections.ConfigDict, stage: str) -> memory.Workload:
    """The train-step workload of model stage `stage` ("sft", "reason_sft", "grpo", "sdpo") under `config`."""
    remat = stage_remat(config, stage)
    if stage in ("sft", "reason_sft"):
        c = config[stage]
        return memory.Workload(batch_size=c.batch_size, seq_len=max(c.length_buckets),
                               grad_accum_steps=c.grad_accum_steps, logits_chunk=c.logits_chunk, remat=remat)
    if stage == "grpo":
        c = config.grpo
        generated = c.max_new_tokens if c.rollout == "sample" else sid_length(config)
        sequences = c.batch_size * c.group_size
        length = c.prompt_length + generated
        return memory.Workload(batch_size=sequences, seq_len=length, logits_chunk=c.logits_chunk, remat=remat,
                               reference_model=c.kl_beta > 0, rollout_sequences=sequences, rollout_len=length)
    if stage == "sdpo":
        c = config.sdpo
        return memory.Workload(batch_size=c.batch_size * (c.negatives + 1),
                               seq_len=c.prompt_length + sid_length(config), logits_chunk=c.logits_chunk, remat=remat,
                               reference_model=True)
    raise ValueError(f"no memory plan for stage '{stage}' (model stages: sft, reason_sft, grpo, sdpo)")


def check_stage(config: ml_collections.ConfigDict, stage: str, model_config: ModelConfig,
                mesh: jax.sharding.Mesh) -> memory.MemoryPlan:
    """Plan model stage `stage` on `mesh` and refuse (MemoryPlanError) if it cannot fit; call before compiling."""
    plan = memory.estimate(model_config, dict(mesh.shape), stage_workload(config, stage))
    try:
        capacity = memory.device_capacity(config.mesh.device_memory_gib)
        memory.ensure_fits(plan, model_config, capacity, config.mesh.memory_margin)
    except memory.MemoryPlanError as e:
        raise memory.MemoryPlanError(
            f"{e}\nConfig keys: the device size is config.mesh.device_memory_gib, the margin "
            f"config.mesh.memory_margin; fsdp and data are under config.mesh; remat under config.{stage} "
            f"(or config.mesh for every stage); logits_chunk, grad_accum_steps and batch_size under config.{stage}.") from None
    return plan
