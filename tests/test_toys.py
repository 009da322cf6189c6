"""The two-armed bandit and the rule-based reward of notebook 03 (alignlib.toys)."""
import math

import numpy as np
import pytest
import torch

from alignlib import toys


def test_positive_word_reward_is_ten_times_the_share_of_positive_words():
    rewards = toys.positive_word_reward([], ["This is great! I love it.", "No.", "", "Thanks, glad you asked"])
    # 2 of 6 words; none; an empty reply; 2 of 4 ("thanks", "glad")
    assert torch.allclose(rewards, torch.tensor([10 * 2 / 6, 0.0, 0.0, 10 * 2 / 4]))


@pytest.mark.parametrize("baseline", ["ema", "rloo"])
def test_bandit_with_a_baseline_learns_the_better_arm(baseline):
    run = toys.bandit(baseline)
    assert run["p_good"][0] == pytest.approx(1 / (1 + math.e ** 2))  # softmax(-1, 1)
    assert run["p_good"][-1] > 0.95


def test_bandit_without_a_baseline_pays_for_the_rewards_offset_in_gradient_noise():
    # rewards 11 and 10: without a baseline every per-sample estimate carries the offset of 10
    none, ema = toys.bandit("none"), toys.bandit("ema")
    assert np.mean(none["grad_var"]) > 3 * np.mean(ema["grad_var"])
    assert np.mean(none["sq_adv"]) > 50 * np.mean(ema["sq_adv"])
    finals = [toys.bandit("none", seed=s)["p_good"][-1] for s in range(8)]
    assert min(finals) < 0.1  # at least one run locks onto the worse arm: noise, not bias
    assert all(toys.bandit("ema", seed=s)["p_good"][-1] > 0.95 for s in range(8))


def test_bandit_kl_penalty_holds_the_policy_at_the_closed_form_optimum():
    # maximising E[r] - beta KL(pi || pi_ref) gives pi*(a) proportional to pi_ref(a) exp(r(a) / beta)
    beta, ref = 2.0, 1 / (1 + math.e ** 2)
    odds = ref / (1 - ref) * math.exp(1.0 / beta)
    run = toys.bandit("ema", beta=beta, steps=400, lr=0.2, noise=0.0)
    assert np.mean(run["p_good"][-100:]) == pytest.approx(odds / (1 + odds), abs=0.05)


def test_bandit_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="unknown baseline"):
        toys.bandit("ppo")
    with pytest.raises(ValueError, match="groups of k=3"):
        toys.bandit("rloo", batch=8, k=3)
