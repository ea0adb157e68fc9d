"""Student's t distribution (CDF and quantile) at any real degrees of freedom, without SciPy.

An interval whose seed variance is estimated from a few seeds needs the t quantile at the
Welch–Satterthwaite degrees of freedom (a real number); ``df = inf`` is the normal distribution. The CDF
is the regularized incomplete beta function, evaluated by its continued fraction (modified Lentz, as in
Numerical Recipes §6.4); the quantile by Newton steps on the CDF. Accurate to ~1e-10.
"""

from __future__ import annotations

import math
from statistics import NormalDist

_NORMAL = NormalDist()


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes ``betacf``)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0 or x >= 1.0:
        return max(0.0, min(1.0, x))
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with ``df`` > 0 degrees of freedom (``inf``: normal)."""
    if math.isinf(df) or df > 1e7:
        return _NORMAL.cdf(x)
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x >= 0 else tail


def t_pdf(x: float, df: float) -> float:
    """Density of Student's t with ``df`` degrees of freedom."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``inf``: normal): Newton steps on
    the CDF from the normal quantile, falling back to bisection where a step leaves the bracket."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t quantile: p = {p} is not in (0, 1)")
    if math.isinf(df) or df > 1e7:
        return _NORMAL.inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, max(1.0, _NORMAL.inv_cdf(p))
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    x = (low + high) / 2.0
    for _ in range(100):
        gap = t_cdf(x, df) - p
        low, high = (x, high) if gap < 0 else (low, x)
        step = x - gap / t_pdf(x, df)
        x = step if low < step < high else (low + high) / 2.0
        if abs(gap) < 1e-13 or high - low < 1e-12:
            break
    return x


def two_sided_p(statistic: float, df: float) -> float:
    """P(|T| >= |statistic|): the p-value of a two-sided t (or, at ``df = inf``, z) test."""
    return min(1.0, 2.0 * (1.0 - t_cdf(abs(statistic), df)))
