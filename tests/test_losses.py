import math

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
