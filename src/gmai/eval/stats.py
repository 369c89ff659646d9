"""Small-sample statistics for comparing models on the same questions, and for training curves.

A tiny model scored on a few dozen questions moves by several points from noise alone, so every
comparison the demo reports comes with its uncertainty:

- :func:`wilson_interval`: 95% interval of an accuracy (better than the normal approximation near 0 or 1);
- :func:`mcnemar_exact`: two models answering the *same* questions: the exact two-sided test on the
  questions where exactly one of them is right (paired, so it is far more sensitive than comparing
  two intervals);
- :func:`trend`: does a noisy per-step curve (GRPO reward) go up? Least-squares slope with its 95%
  interval, and the mean of the first and last thirds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of ``successes / n`` (``(0, 1)`` when ``n == 0``)."""
    from scipy.stats import binomtest

    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, Any]:
    """Exact McNemar test of model B against model A on the same questions (paired).

    ``b_only``: questions only B gets right; ``a_only``: only A. Under "no difference" each discordant
    question is a fair coin, so the two-sided p-value is a binomial test over ``b_only + a_only`` flips.
    """
    from scipy.stats import binomtest

    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired test needs the same questions: {len(a_correct)} vs {len(b_correct)} results")
    b_only = sum(1 for a, b in zip(a_correct, b_correct) if b and not a)
    a_only = sum(1 for a, b in zip(a_correct, b_correct) if a and not b)
    discordant = a_only + b_only
    p_value = binomtest(b_only, discordant, 0.5).pvalue if discordant else 1.0
    return {"n": len(a_correct), "b_only": b_only, "a_only": a_only, "p_value": float(p_value),
            "difference": (b_only - a_only) / len(a_correct) if a_correct else 0.0}


def trend(values: Sequence[float | None]) -> dict[str, Any]:
    """Slope per step (least squares, 95% interval from its standard error) and first/last-third means.

    ``rises`` is True only when the whole slope interval is above zero. Missing values are skipped.
    """
    from scipy.stats import linregress
    from scipy.stats import t as student_t

    points = [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    n = len(points)
    if n < 3:
        return {"n": n, "slope": None, "slope_ci": None, "first_third": None, "last_third": None, "rises": False}
    xs, ys = zip(*points)
    fit = linregress(xs, ys)
    half = float(student_t.ppf(0.975, n - 2)) * fit.stderr
    third = max(1, n // 3)
    return {"n": n, "slope": float(fit.slope), "slope_ci": (float(fit.slope - half), float(fit.slope + half)),
            "first_third": sum(ys[:third]) / third, "last_third": sum(ys[-third:]) / third,
            "rises": bool(fit.slope - half > 0)}
