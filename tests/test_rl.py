"""The RL stages' host-side helpers: batch order and the run summary."""
import numpy as np
import pytest

from sidjax.stages.rl import batch_rows, mean_metrics


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
