import numpy as np
import pytest

from alignlib import evaluate


def test_bootstrap_ci_constant_and_deterministic():
    assert evaluate.bootstrap_ci([0.7] * 50) == pytest.approx([0.7, 0.7])
    x = np.r_[np.ones(60), np.zeros(40)]
    lo, hi = evaluate.bootstrap_ci(x, seed=1)
    assert evaluate.bootstrap_ci(x, seed=1) == [lo, hi]
    # normal approximation: 0.6 +- 1.96 * sqrt(0.24 / 100) = [0.504, 0.696]
    assert lo == pytest.approx(0.504, abs=0.02) and hi == pytest.approx(0.696, abs=0.02)


def test_bootstrap_ci_needs_values():
    with pytest.raises(ValueError):
        evaluate.bootstrap_ci([])


def test_length_analysis_by_hand():
    len_c, len_r = [10, 5, 8, 3], [4, 9, 8, 7]
    r_c, r_r = [1.0, 2.0, 0.0, -1.0], [0.0, 1.0, 1.0, 0.0]
    out = evaluate.length_analysis(len_c, len_r, r_c, r_r)
    # pairs with different lengths: 0 (RM prefers the longer), 1 (prefers the shorter), 3 (prefers the longer)
    assert out["rm_prefers_longer"] == pytest.approx(2 / 3)
    assert out["length_baseline_accuracy"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert out["accuracy_when_chosen_shorter"] == pytest.approx(0.5) and out["n_chosen_shorter"] == 2
