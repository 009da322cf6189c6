import math

import pytest
import torch

from alignlib import losses


def test_bradley_terry_by_hand():
    s_c, s_r = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    # -log sigmoid(1) = log(1 + e^-1); -log sigmoid(-1) = log(1 + e)
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.e)) / 2
    assert abs(losses.bradley_terry_loss(s_c, s_r).item() - expected) < 1e-6


def test_bradley_terry_tie_is_ln2_and_margin_shifts_it():
    zero = torch.zeros(3)
    assert abs(losses.bradley_terry_loss(zero, zero).item() - math.log(2)) < 1e-7
    with_margin = losses.bradley_terry_loss(zero, zero, margin=1.0).item()
    assert abs(with_margin - math.log1p(math.e)) < 1e-6


def test_bradley_terry_large_gaps_stay_finite():
    s_c, s_r = torch.tensor([1e4, -1e4]), torch.tensor([-1e4, 1e4])
    loss = losses.bradley_terry_loss(s_c, s_r)
    assert torch.isfinite(loss) and abs(loss.item() - 1e4) < 1e-3  # (0 + 2e4) / 2
    s_c.requires_grad_(True)
    losses.bradley_terry_loss(s_c, s_r).backward()
    assert torch.isfinite(s_c.grad).all() and s_c.grad.tolist() == [-0.0, -0.5]


def test_centering_term_by_hand():
    s_c, s_r = torch.tensor([1.0, 3.0]), torch.tensor([1.0, -1.0])
    base = losses.bradley_terry_loss(s_c, s_r).item()
    centered = losses.bradley_terry_loss(s_c, s_r, center_coef=0.01).item()
    assert abs(centered - base - 0.01 * (4.0 + 4.0) / 2) < 1e-6


def onehot_logits(scores, n=10):
    """Logits whose softmax puts (almost) all mass on the given score (1..n)."""
    out = torch.full((len(scores), n), -30.0)
    for i, s in enumerate(scores):
        out[i, s - 1] = 30.0
    return out


def test_expected_score_loss_by_hand():
    lc, lr = onehot_logits([7, 3]), onehot_logits([5, 4])
    assert losses.expected_score(lc).tolist() == [pytest_approx(7.0), pytest_approx(3.0)]
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert abs(losses.expected_score_loss(lc, lr).item() - expected) < 1e-5


def pytest_approx(x):
    import pytest

    return pytest.approx(x, abs=1e-5)


def test_prob_beats_by_hand_with_ties():
    # p_c = (0.5 on 2, 0.5 on 3), p_r = (1.0 on 2): beats with 0.5, tie with 0.5 -> 0.5 + 0.25
    p_c = torch.zeros(1, 10); p_c[0, 1] = 0.5; p_c[0, 2] = 0.5
    p_r = torch.zeros(1, 10); p_r[0, 1] = 1.0
    lc, lr = torch.log(p_c.clamp(min=1e-30)), torch.log(p_r.clamp(min=1e-30))
    assert losses.prob_beats(lc, lr).item() == pytest_approx(0.75)
    assert losses.prob_beats_loss(lc, lr).item() == pytest_approx(-math.log(0.75))
    same = torch.randn(3, 10)
    assert losses.prob_beats(same, same).tolist() == [pytest_approx(0.5)] * 3  # identical -> chance
    assert losses.prob_beats(onehot_logits([9]), onehot_logits([2])).item() == pytest_approx(1.0)


def test_prob_beats_stays_finite_when_certainly_wrong():
    loss = losses.prob_beats_loss(onehot_logits([1]), onehot_logits([10]))
    assert torch.isfinite(loss) and loss.item() > 20


def test_the_score_axis_is_the_last_one_whatever_the_leading_axes():
    """(..., n): a (2, 3, n) batch gives what each of its (n,) rows gives alone."""
    torch.manual_seed(0)
    lc, lr = torch.randn(2, 3, 10, dtype=torch.float64), torch.randn(2, 3, 10, dtype=torch.float64)
    rows = [(lc[i, j], lr[i, j]) for i in range(2) for j in range(3)]
    expected = torch.stack([losses.expected_score(c[None])[0] for c, _ in rows]).reshape(2, 3)
    assert torch.allclose(losses.expected_score(lc), expected) and losses.expected_score(lc).dtype == torch.float64
    beats = torch.stack([losses.prob_beats(c[None], r[None])[0] for c, r in rows]).reshape(2, 3)
    assert torch.allclose(losses.prob_beats(lc, lr), beats)


def test_the_reward_model_loss_dispatches_by_kind_and_checks_the_head():
    torch.manual_seed(0)
    sc, sr = torch.randn(4, 1), torch.randn(4, 1)
    assert losses.reward_model_loss("bradley_terry", sc, sr).item() == losses.bradley_terry_loss(sc[:, 0], sr[:, 0]).item()
    assert losses.reward_model_loss("bradley_terry", sc, sr, margin=0.5, center_coef=0.1).item() == \
        losses.bradley_terry_loss(sc[:, 0], sr[:, 0], 0.5, 0.1).item()
    lc, lr = torch.randn(4, 10), torch.randn(4, 10)
    assert losses.reward_model_loss("expected_score", lc, lr).item() == losses.expected_score_loss(lc, lr).item()
    assert losses.reward_model_loss("prob_beats", lc, lr).item() == losses.prob_beats_loss(lc, lr).item()
    with pytest.raises(ValueError, match="one-output head"):
        losses.reward_model_loss("bradley_terry", lc, lr)
    with pytest.raises(ValueError, match="needs a distribution head"):
        losses.reward_model_loss("prob_beats", sc, sr)
    with pytest.raises(ValueError, match="unknown reward-model loss 'hinge'"):
        losses.reward_model_loss("hinge", lc, lr)
