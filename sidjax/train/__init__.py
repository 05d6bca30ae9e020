"""Training: losses, optimizer state, the SFT loop and checkpoints.

    losses.py      token_logprobs / hidden_token_logprobs (chunked, no full-vocab logits), masked_nll,
                   response_window (logits only where the answer is)
    state.py       AdamW + warmup/decay schedule + clipping, frozen-LM masking, TrainState
    sft.py         the jitted train/eval steps (grad accumulation, donation, sharding) and `fit`
                   (eval each epoch, early stopping, checkpoints, SIGTERM, exact resume)
    checkpoint.py  TrainCheckpoints / BestModel (orbax) and restore_model_arrays (model bundles: sidjax.bundle)
    grpo.py, sdpo.py, rewards.py, advantages.py   stage 3 (RL)
"""
