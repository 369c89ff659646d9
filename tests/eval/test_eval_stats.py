import math

import pytest

from gmai.eval.stats import mcnemar_exact, trend, wilson_interval


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(0, 20)[1] == pytest.approx(0.1611, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_counts_only_discordant_pairs():
    a = [True] * 10 + [False] * 10 + [True] * 2
    b = [True] * 10 + [True] * 10 + [False] * 2  # b wins 10 questions, a wins 2
    result = mcnemar_exact(a, b)
    assert (result["b_only"], result["a_only"], result["n"]) == (10, 2, 22)
    # exact two-sided binomial: 2 * P(X <= 2 | 12, 0.5) = 2 * 79 / 4096
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)
    assert result["difference"] == pytest.approx(8 / 22)
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0


def test_mcnemar_rejects_unpaired_results():
    with pytest.raises(ValueError, match="same questions"):
        mcnemar_exact([True], [True, False])


def test_trend_detects_a_noisy_rise_and_not_flat_noise():
    rising = [0.1 * i + (0.3 if i % 2 else -0.3) for i in range(30)]
    flat = [0.5 + (0.3 if i % 2 else -0.3) for i in range(30)]
    up, level = trend(rising), trend(flat)
    assert up["rises"] and up["slope_ci"][0] > 0 and up["last_third"] > up["first_third"]
    assert not level["rises"] and level["slope_ci"][0] < 0 < level["slope_ci"][1]
    assert math.isclose(up["slope"], 0.1, rel_tol=0.05)


def test_trend_skips_missing_values_and_needs_three_points():
    assert trend([None, 1.0, None, 2.0])["rises"] is False
    assert trend([0.0, None, 1.0, 2.0, 3.0])["n"] == 4
