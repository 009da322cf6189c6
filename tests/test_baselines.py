"""Baselines and advantages of REINFORCE, against hand computations."""

import pytest
import torch

from alignlib import baselines


def test_ema_baseline_by_hand():
    r = torch.tensor([0.0, 2.0, 4.0])
    assert baselines.ema_baseline(None, r, 0.9) == pytest.approx(2.0)  # starts at the first batch mean
    assert baselines.ema_baseline(1.0, r, 0.9) == pytest.approx(0.9 * 1.0 + 0.1 * 2.0)


def test_rloo_baseline_by_hand():
    assert baselines.rloo_baseline(torch.tensor([[1.0, 3.0]])).tolist() == [[3.0, 1.0]]
    assert baselines.rloo_baseline(torch.tensor([[1.0, 2.0, 6.0]])).tolist() == [[4.0, 3.5, 1.5]]
    with pytest.raises(ValueError, match="k >= 2"):
        baselines.rloo_baseline(torch.tensor([[1.0]]))


def test_ema_advantages_use_the_baseline_before_this_batch():
    r = torch.tensor([5.0, 7.0])
    adv, b, new = baselines.ema_advantages(r, 2.0, 0.9)
    assert adv.tolist() == [3.0, 5.0] and b == 2.0 and new == pytest.approx(0.9 * 2.0 + 0.1 * 6.0)
    adv, b, new = baselines.ema_advantages(torch.tensor([1.0, 3.0]), None, 0.9)  # the first batch: its own mean
    assert adv.tolist() == [-1.0, 1.0] and b == 2.0 and new == 2.0


def test_rloo_advantages_by_hand():
    adv, b = baselines.rloo_advantages(torch.tensor([1.0, 3.0, 5.0, 9.0]), k=2)
    assert adv.tolist() == [-2.0, 2.0, -4.0, 4.0] and b == 4.5
    adv, b = baselines.rloo_advantages(torch.tensor([1.0, 2.0, 6.0]), k=3)
    assert adv.tolist() == [-3.0, -1.5, 4.5] and b == pytest.approx(3.0)
    with pytest.raises(ValueError, match="groups of k=2"):
        baselines.rloo_advantages(torch.tensor([1.0, 2.0, 3.0]), k=2)


def test_advantage_stats_by_hand():
    # mean 2, E[A^2] = (1 + 9) / 2 = 5, variance over the n = 2 rows ((1-2)^2 + (3-2)^2) / 2 = 1
    s = baselines.advantage_stats(torch.tensor([1.0, 3.0]))
    assert s == pytest.approx({"advantage/mean": 2.0, "advantage/sq_mean": 5.0, "advantage/std": 1.0,
                               "advantage/var": 1.0})


def test_advantage_second_moment_is_mean_squared_plus_variance():
    """The identity the report states, E[A^2] = mean(A)^2 + var(A), holds exactly for any batch."""
    a = torch.randn(7, generator=torch.Generator().manual_seed(0)) + 0.3
    s = baselines.advantage_stats(a)
    assert s["advantage/sq_mean"] == pytest.approx(s["advantage/mean"] ** 2 + s["advantage/var"], rel=1e-12)


def test_advantage_stats_of_a_batch_of_one_reply_are_finite():
    """A run with one reply per iteration must still write its record (records refuse NaN)."""
    s = baselines.advantage_stats(torch.tensor([-0.5]))
    assert s == {"advantage/mean": -0.5, "advantage/sq_mean": 0.25, "advantage/std": 0.0, "advantage/var": 0.0}
