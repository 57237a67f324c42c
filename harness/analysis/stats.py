"""Statistics shared by the effect estimators: seed bootstrap intervals, paired tests, verdicts, Pareto fronts.

Interval methods (95% by default):
  * "expanded" (default): Hesterberg's expanded percentile bootstrap. The percentiles taken from the
    bootstrap distribution are widened from alpha/2 to Phi(-sqrt(n/(n-1)) * t_{1-alpha/2, n-1}), which
    corrects the plain percentile interval's under-coverage with few seeds (about 89% coverage at 8
    seeds and 75% at 3 for a nominal 95%; expanded: about 93% at 8 seeds).
  * "percentile": the plain percentile bootstrap (alpha/2 and 1 - alpha/2 quantiles).
No bootstrap can cover well with 2-3 seeds (the resampled means never leave [min, max]), which is why an
effect is only called measurable when the paired t-test agrees (see `verdict`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

CI_METHODS = ("expanded", "percentile")
ALPHA = 0.05

MEASURABLE = "measurable"
NOT_MEASURABLE = "no measurable effect"
INCONCLUSIVE = "inconclusive"
NOT_ESTIMATED = "not estimated"


def tail_probability(n: int, method: str, alpha: float = ALPHA) -> float:
    """The lower tail probability whose bootstrap percentile is the interval's lower end (n = resampled units)."""
    if method not in CI_METHODS:
        raise ValueError(f"unknown interval method {method!r}; known: {', '.join(CI_METHODS)}")
    if method == "percentile" or n < 2:
        return alpha / 2
    t = stats.t.ppf(1 - alpha / 2, n - 1)
    return float(stats.norm.sf(math.sqrt(n / (n - 1)) * t))


def interval_from_draws(draws: np.ndarray, n_units: int, method: str, alpha: float = ALPHA) -> np.ndarray:
    """Interval ends from bootstrap draws [B, ...] -> [2, ...] (NaN draws are ignored)."""
    q = tail_probability(n_units, method, alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(draws, [100 * q, 100 * (1 - q)], axis=0)


def bootstrap_mean_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator, method: str = "expanded",
                      alpha: float = ALPHA) -> tuple[float, float]:
    """Bootstrap interval of the mean of `values` (units resampled with replacement); NaNs with < 2 values.

    `values` may be [n] or [n, m] (m statistics sharing the same resampled units); returns arrays then.
    """
    v = np.asarray(values, dtype=float)
    n = v.shape[0]
    if n < 2:
        nan = np.full(v.shape[1:], np.nan) if v.ndim > 1 else math.nan
        return nan, nan
    idx = rng.integers(0, n, size=(n_boot, n))
    draws = v[idx].mean(axis=1)
    lo, hi = interval_from_draws(draws, n, method, alpha)
    if v.ndim == 1:
        return float(lo), float(hi)
    return lo, hi


def one_sample_p(values: np.ndarray) -> float:
    """Two-sided p-value of a one-sample t-test of mean zero (the paired t-test on differences); NaN if < 2."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_1samp(v, 0.0).pvalue)
    if math.isnan(p) and np.all(v == v[0]):
        # Identical differences in every seed: no spread; exact zero is no evidence, a constant shift is certain.
        return 1.0 if v[0] == 0 else 0.0
    return p


def verdict(effect: float, lo: float, hi: float, p: float, n_units: int, alpha: float = ALPHA) -> str:
    """Measurable only when the interval excludes zero and the t-test agrees (p < alpha).

    NaN effect: not estimated. One unit: no interval, hence no measurable effect. Interval and test
    disagreeing: inconclusive.
    """
    if effect is None or not math.isfinite(effect):
        return NOT_ESTIMATED
    if n_units < 2 or not (math.isfinite(lo) and math.isfinite(hi)):
        return NOT_MEASURABLE
    excludes_zero = lo > 0 or hi < 0
    significant = math.isfinite(p) and p < alpha
    if excludes_zero and (significant or not math.isfinite(p)):
        return MEASURABLE
    if not excludes_zero and not significant:
        return NOT_MEASURABLE
    return INCONCLUSIVE


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of the points not dominated when minimising both x and y (NaN points are never on it).

    A point is dominated when another is <= in both and < in at least one; duplicates of a front point
    are all kept.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    mask = np.zeros(x.shape[0], dtype=bool)
    valid = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if valid.size == 0:
        return mask
    order = valid[np.lexsort((y[valid], x[valid]))]  # by x, then y
    best_y = math.inf
    best_x_at_best_y = math.nan
    for i in order:
        if y[i] < best_y:
            mask[i] = True
            best_y, best_x_at_best_y = y[i], x[i]
        elif y[i] == best_y and x[i] == best_x_at_best_y:
            mask[i] = True  # exact duplicate of a front point
    return mask
