"""Training: losses, optimizer state, the SFT loop and checkpoints.

    losses.py      token_logprobs / hidden_token_logprobs (chunked, no full-vocab logits), masked_nll,
                   response_window (logits only where the answer is)
    state.py       AdamW + warmup/decay schedule + clipping, frozen-LM masking, TrainState
    loop.py        the one training loop (SFT, reasoning SFT, GRPO, S-DPO): progress, metrics, checkpoints,
                   exact resume, SIGTERM -> Preempted, NaN stop
    sft.py         the jitted train/eval steps (grad accumulation, donation, sharding) and `fit`
                   (the loop plus eval each epoch, best model, early stopping)
    checkpoint.py  TrainCheckpoints / BestModel (orbax) and restore_model_arrays (model bundles: sidjax.bundle)
    grpo.py, sdpo.py, rewards.py, advantages.py   stage 3 (RL)
"""
