"""bench.peaks' FLOP counts against the models' own weights and hand-counted cases (no timing)."""
import dataclasses

import jax
import pytest
from flax import nnx

from bench import peaks
from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM


@pytest.mark.parametrize("tied", [True, False])
def test_a_tokens_matmul_flops_are_two_per_weight_of_every_matrix_but_the_input_embedding(tied):
    config = dataclasses.replace(preset("tiny", 96), tie_word_embeddings=tied)
    model = CausalLM(config, rngs=nnx.Rngs(0))
    matrices = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)) if x.ndim >= 2)
    gathered = 0 if tied else config.vocab_size * config.hidden_size  # untied: the input table is only read
    assert peaks.lm_forward_flops(config, 0) == 2 * (matrices - gathered)


def test_attention_adds_scores_and_values_per_position_of_context():
    config = preset("tiny", 96)
    extra = peaks.lm_forward_flops(config, 10) - peaks.lm_forward_flops(config, 0)
    assert extra == 2 * 2 * config.num_layers * 10 * config.num_heads * config.head_dim


def test_mlp_flops_skip_only_the_input_gradient_of_data():
    # weights 3x4 and 4x2: forward 2 x 20, weight gradients 2 x 20, input gradients 2 x 20 (2 x 8 from data)
    assert peaks.mlp_train_flops((3, 4, 2), data_input=False) == 120
    assert peaks.mlp_train_flops((3, 4, 2), data_input=True) == 96


def test_share_of_peak_names_the_peak_it_divides_by():
    line = peaks.share_of_peak(2e9, 0.5, {"XLA bfloat16": 8e9}, "XLA bfloat16")
    assert line.strip() == "4.0 GFLOP/s (50% of the XLA bfloat16 matmul peak)"


def test_beam_search_flops_count_each_prompt_once_and_each_beam_per_later_level():
    config = preset("tiny", 96)
    output_layer = 2 * config.vocab_size * config.hidden_size

    def flops(lengths, beams, levels):
        return peaks.beam_search_flops(config, lengths, beams, levels)

    # One token, one level: that token's forward pass, output layer included.
    assert flops([1], 4, 1) == peaks.lm_forward_flops(config, 1)
    # A prompt token more: one more pass through the body, attending to one more position.
    assert flops([6], 4, 1) - flops([5], 4, 1) == peaks.lm_forward_flops(config, 6) - output_layer
    # A beam more: one more row per level after the first, attending to the prompt and the SID tokens before.
    assert flops([5], 5, 3) - flops([5], 4, 3) == peaks.lm_forward_flops(config, 6) + peaks.lm_forward_flops(config, 7)
    assert flops([2, 5], 4, 3) == flops([2], 4, 3) + flops([5], 4, 3)
