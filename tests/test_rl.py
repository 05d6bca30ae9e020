"""The RL stages' host-side helpers: batch order and the run summary."""
import numpy as np
import pytest

from sidjax.stages.rl import batch_rows, mean_metrics, prompt_rows


def test_mean_metrics_averages_every_logged_step():
    # First and last steps without signal must not hide the steps in between that have it.
    history = [
        {"step": 1, "reward/prefix": 0.1, "informative_groups": 0.0},
        {"step": 2, "reward/prefix": 0.4, "informative_groups": 0.75},
        {"step": 3, "reward/prefix": 0.1, "informative_groups": 0.0},
    ]
    assert mean_metrics(history) == pytest.approx({"reward/prefix": 0.2, "informative_groups": 0.25})
    assert mean_metrics([]) is None


def test_batch_rows_cover_each_prompt_once_per_epoch_and_repeat_on_resume():
    epoch = np.concatenate([batch_rows(step, 4, 12, seed=0) for step in range(3)])
    assert sorted(epoch.tolist()) == list(range(12))
    np.testing.assert_array_equal(batch_rows(4, 4, 12, seed=0), batch_rows(4, 4, 12, seed=0))


def test_prompt_rows_keep_the_most_recent_samples_then_a_seeded_subset():
    np.testing.assert_array_equal(prompt_rows(10, 0, 0, seed=0), np.arange(10))
    np.testing.assert_array_equal(prompt_rows(10, 4, 0, seed=0), [6, 7, 8, 9])
    subset = prompt_rows(10, 6, 3, seed=1)
    assert len(subset) == 3 and set(subset.tolist()) <= {4, 5, 6, 7, 8, 9} and list(subset) == sorted(subset)
    np.testing.assert_array_equal(subset, prompt_rows(10, 6, 3, seed=1))
    np.testing.assert_array_equal(prompt_rows(10, 20, 0, seed=0), np.arange(10))
