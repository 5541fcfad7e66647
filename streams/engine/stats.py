"""Interval estimates and tests for streamed scores, from running counts and sums.

Everything works on the mergeable aggregates the engine keeps (counts, sums, sums of
squares), returns plain floats and needs only ``math`` and numpy: the normal and
Student t distributions are implemented here so that scipy stays a test-only oracle.

Conventions: no data (``n == 0``, or ``n < 2`` where a variance is needed) gives NaN
rather than an exception; counts that cannot come from one sample (negative, or more
successes than responses) raise ``ValueError``; distribution functions follow scipy
(NaN outside their domain, ``-inf``/``inf`` at probabilities 0 and 1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

Z95: Final = 1.959963984540054
"""Two-sided 95% standard normal quantile, the default ``z`` everywhere."""

_NAN: Final = math.nan
_SQRT2: Final = math.sqrt(2.0)
_SQRT2PI: Final = math.sqrt(2.0 * math.pi)
_HALF_LOG_PI: Final = 0.5 * math.log(math.pi)

# Acklam's rational approximation to the inverse normal CDF (relative error < 1.15e-9).
_A: Final = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
             1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
_B: Final = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
             6.680131188771972e01, -1.328068155288572e01)
_C: Final = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
             -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
_D: Final = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
             3.754408661907416e00)
_P_LOW: Final = 0.02425
_HILL_DOF: Final = 1e4
"""Above this many degrees of freedom the t tail uses Hill's normalizing expansion."""


# --------------------------------------------------------------------------- normal


def normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (Acklam's approximation plus one Halley step, ~1e-15).

    Turns a configurable confidence level into a ``z``; NaN outside [0, 1].
    """
    p = float(p)
    if not 0.0 <= p <= 1.0:
        return _NAN
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p > 0.5:  # 1 - p is exact here, and the lower tail is the accurate side
        return -_normal_lower_quantile(1.0 - p)
    return _normal_lower_quantile(p)


def _normal_lower_quantile(p: float) -> float:
    """The normal quantile for 0 < p <= 0.5, refined against ``erfc``."""
    if p < _P_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        x = ((((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5])
             / ((((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1.0))
    else:
        q = p - 0.5
        r = q * q
        x = ((((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]) * q
             / (((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0))
    density = math.exp(-0.5 * x * x) / _SQRT2PI
    if density > 0.0:
        u = (0.5 * math.erfc(-x / _SQRT2) - p) / density
        x -= u / (1.0 + 0.5 * x * u)
    return x


def normal_sf(z: float) -> float:
    """Upper-tail probability P(Z > z) of the standard normal, accurate far into the tail."""
    return 0.5 * math.erfc(z / _SQRT2)


def _log_normal_sf(z: float) -> float:
    """log P(Z > z) for z >= 0, by the asymptotic series where ``erfc`` would underflow."""
    if z < 26.0:
        return math.log(normal_sf(z))
    r = 1.0 / (z * z)
    series = 1.0 + r * (-1.0 + r * (3.0 + r * (-15.0 + r * (105.0 + r * -945.0))))
    return -0.5 * z * z - math.log(z * _SQRT2PI) + math.log(series)


# ------------------------------------------------------------------------- shares


def _check_counts(n: float, *parts: float) -> None:
    """Reject counts that cannot describe one sample of ``n`` responses."""
    if n < 0.0 or any(part < 0.0 for part in parts) or sum(parts) > n:
        raise ValueError(f"inconsistent counts: {parts} out of n={n}")


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for the share ``successes / n``.

    Unlike the Wald interval it stays inside [0, 1] and keeps its coverage near 0 and 1.
    """
    successes, n, z = float(successes), float(n), float(z)
    _check_counts(n, successes)
    if n == 0.0:
        return _NAN, _NAN
    p = successes / n
    z2n = z * z / n
    centre = (p + 0.5 * z2n) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + 0.25 * z2n / n)
    low = 0.0 if successes == 0.0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def nps_score(promoters: float, detractors: float, n: float) -> float:
    """Net Promoter Score in points (-100..100): promoter share minus detractor share."""
    promoters, detractors, n = float(promoters), float(detractors), float(n)
    _check_counts(n, promoters, detractors)
    if n == 0.0:
        return _NAN
    return 100.0 * (promoters - detractors) / n


def nps_se(promoters: float, detractors: float, n: float) -> float:
    """Standard error of the NPS in points, from the multinomial variance of +1/0/-1 scores.

    SE = 100 * sqrt((pP + pD - (pP - pD)^2) / n); zero when every answer is in one class.
    """
    promoters, detractors, n = float(promoters), float(detractors), float(n)
    _check_counts(n, promoters, detractors)
    if n == 0.0:
        return _NAN
    p_p, p_d = promoters / n, detractors / n
    variance = max(0.0, p_p + p_d - (p_p - p_d) ** 2)
    return 100.0 * math.sqrt(variance / n)


def nps_interval(
    promoters: float, detractors: float, n: float, z: float = Z95
) -> tuple[float, float]:
    """Normal-approximation interval NPS +/- z * SE, clipped to [-100, 100].

    It has zero width when all answers fall in one class (e.g. all promoters), as the
    plug-in variance is then zero; callers should treat small ``n`` with care.
    """
    z = float(z)
    score = nps_score(promoters, detractors, n)
    if math.isnan(score):
        return _NAN, _NAN
    half = z * nps_se(promoters, detractors, n)
    return max(-100.0, score - half), min(100.0, score + half)


# -------------------------------------------------------------------------- means


def mean_var(n: float, total: float, total_sq: float) -> tuple[float, float]:
    """Mean and sample variance (n - 1 denominator) from count, sum and sum of squares.

    Negative variances from floating-point cancellation are clamped to 0; NaN when
    there is no data (mean) or a single observation (variance).
    """
    n, total, total_sq = float(n), float(total), float(total_sq)
    if n < 0.0:
        raise ValueError(f"negative count n={n}")
    if n == 0.0:
        return _NAN, _NAN
    mean = total / n
    if n <= 1.0:
        return mean, _NAN
    return mean, max(0.0, (total_sq - total * mean) / (n - 1.0))


def mean_interval(
    n: float, total: float, total_sq: float, z: float | None = None
) -> tuple[float, float]:
    """Confidence interval for a mean kept as running sums.

    Uses the Student t 97.5% quantile with n - 1 degrees of freedom (a 95% interval)
    unless an explicit normal ``z`` is given; NaN for fewer than two observations.
    """
    n = float(n)
    mean, variance = mean_var(n, total, total_sq)
    if n < 2.0:
        return _NAN, _NAN
    q = t_quantile(0.975, n - 1.0) if z is None else float(z)
    half = q * math.sqrt(variance / n)
    return mean - half, mean + half


# ---------------------------------------------------------------------- Student t


def _log_gamma_half_ratio(a: float) -> float:
    """log(Gamma(a + 1/2) / Gamma(a)), with an asymptotic series where lgamma would cancel."""
    if a < 20.0:
        return math.lgamma(a + 0.5) - math.lgamma(a)
    r = 1.0 / (a * a)
    series = (-1.0 / 8.0 + r * (1.0 / 192.0 + r * (-1.0 / 640.0
              + r * (17.0 / 14336.0 + r * (-31.0 / 18432.0))))) / a
    return 0.5 * math.log(a) + series


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz, NR ``betacf``)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 3e-16:
            break
    return h


def _log1p_square_ratio(s: float, dof: float) -> float:
    """log(1 + s^2 / dof) without overflow for huge ``s``."""
    if s > 1e100:
        return 2.0 * math.log(s) - math.log(dof) + math.log1p(dof / s / s)
    return math.log1p(s * s / dof)


def _t_log_lower_tail(s: float, dof: float) -> float:
    """log P(T <= -s) for s >= 0, via the regularized incomplete beta I_x(dof/2, 1/2).

    For dof > 1e4 the continued fraction loses digits to cancellation (x is within
    s^2/dof of 1), so Hill's (1970, CACM alg. 395) normalizing expansion, accurate to
    ~1e-13 there, maps t to a standard normal deviate instead.
    """
    if s == 0.0:
        return math.log(0.5)
    log1p_ratio = _log1p_square_ratio(s, dof)
    if dof > _HILL_DOF:
        h = dof - 0.5
        y = h * log1p_ratio
        c = 48.0 * h * h
        z = (((((-0.4 * y - 3.3) * y - 24.0) * y - 85.5) / (0.8 * y * y + 100.0 + c)
               + y + 3.0) / c + 1.0) * math.sqrt(y)
        return _log_normal_sf(z)
    a, b = 0.5 * dof, 0.5
    if s > 1e100:  # x = dof / (dof + s^2) and y = 1 - x, without forming s^2
        x, y = math.exp(-log1p_ratio), 1.0
    else:
        ratio = s * s / dof
        x, y = 1.0 / (1.0 + ratio), ratio / (1.0 + ratio)
    # log(x^a y^b / B(a, b)); log x = -log1p(s^2 / dof) stays exact for large dof, and
    # log y = log(s^2 / dof) - log1p(s^2 / dof) survives s^2 underflowing for tiny s
    log_y = 2.0 * math.log(s) - math.log(dof) - log1p_ratio
    log_front = -a * log1p_ratio + b * log_y + _log_gamma_half_ratio(a) - _HALF_LOG_PI
    if x < (a + 1.0) / (a + b + 2.0):
        return math.log(0.5) + log_front + math.log(_betacf(a, b, x) / a)
    complement = math.exp(log_front) * _betacf(b, a, y) / b  # 1 - I_x(a, b)
    return math.log(0.5) + math.log1p(-complement)


def _t_log_pdf(t: float, dof: float) -> float:
    """log density of Student's t with ``dof`` degrees of freedom."""
    return (_log_gamma_half_ratio(0.5 * dof) - 0.5 * math.log(dof) - _HALF_LOG_PI
            - 0.5 * (dof + 1.0) * _log1p_square_ratio(abs(t), dof))


def t_cdf(t: float, dof: float) -> float:
    """Student t CDF P(T <= t) for any real ``dof > 0``, via the incomplete beta function.

    Lower tails are computed directly, so small one-sided p-values keep full precision.
    """
    t, dof = float(t), float(dof)
    if math.isnan(t) or math.isnan(dof) or dof <= 0.0:
        return _NAN
    if math.isinf(dof):
        return normal_sf(-t)
    if math.isinf(t):
        return 0.0 if t < 0 else 1.0
    tail = math.exp(_t_log_lower_tail(abs(t), dof))
    return tail if t <= 0.0 else 1.0 - tail


def _cornish_fisher(z: float, dof: float) -> float:
    """Student t quantile from the normal quantile ``z`` (Hill / A&S 26.7.5 expansion)."""
    z2 = z * z
    g1 = (z2 + 1.0) * z / 4.0
    g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
    g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
    g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
    return z + (g1 + (g2 + (g3 + g4 / dof) / dof) / dof) / dof


def t_quantile(p: float, dof: float) -> float:
    """Inverse Student t CDF for any real ``dof > 0`` (relative accuracy ~1e-13).

    Starts from the Cornish-Fisher expansion (1.5e-8 at the 97.5% point for dof = 30, worse
    in far tails) and solves log P(T <= t) = log p by bracketed Newton steps, so small dof
    and far tails are exact too.
    """
    p, dof = float(p), float(dof)
    if math.isnan(p) or math.isnan(dof) or dof <= 0.0 or not 0.0 <= p <= 1.0:
        return _NAN
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p == 0.5:
        return 0.0
    if math.isinf(dof):
        return normal_quantile(p)
    if p > 0.5:
        return _t_lower_quantile(1.0 - p, dof)
    return -_t_lower_quantile(p, dof)


@functools.lru_cache(maxsize=4096)
def _t_lower_quantile(q: float, dof: float) -> float:
    """The s > 0 with P(T <= -s) = q for 0 < q < 0.5 (cached: callers repeat dof a lot)."""
    log_q = math.log(q)
    log_density_const = _log_gamma_half_ratio(0.5 * dof) - 0.5 * math.log(dof) - _HALF_LOG_PI
    # P(T <= -s) <= density_const * dof^((dof+1)/2) * s^-dof / dof, so this s brackets above.
    log_hi = (log_density_const + 0.5 * (dof - 1.0) * math.log(dof) - log_q) / dof
    if log_hi > 709.0:
        return math.inf
    lo, hi = 0.0, math.exp(log_hi)
    s = -_cornish_fisher(normal_quantile(q), dof)
    if not lo < s < hi:
        s = 0.5 * hi
    for _ in range(200):
        g = _t_log_lower_tail(s, dof) - log_q
        if g == 0.0:
            return s
        if g > 0.0:
            lo = s
        else:
            hi = s
        # d/ds log P(T <= -s) = -pdf(s) / P(T <= -s)
        slope = -math.exp(_t_log_pdf(s, dof) - g - log_q)
        nxt = s - g / slope if slope < 0.0 else math.nan
        if not lo < nxt < hi:
            nxt = math.sqrt(lo * hi) if lo > 0.0 and hi > 4.0 * lo else 0.5 * (lo + hi)
        if abs(nxt - s) <= 1e-14 * s:
            return nxt
        s = nxt
    return s


# -------------------------------------------------------------------------- tests


def _one_sided_lower(diff: float, se: float) -> tuple[float, float]:
    """(z, P(Z <= z)) for ``diff / se``; a zero ``se`` gives the limit, or (0, 1) if diff is 0."""
    if se > 0.0:
        z = diff / se
        return z, normal_sf(-z)
    if diff == 0.0:
        return 0.0, 1.0
    return (-math.inf, 0.0) if diff < 0.0 else (math.inf, 1.0)


def two_proportion_z(x1: float, n1: float, x2: float, n2: float) -> tuple[float, float]:
    """Pooled two-proportion z test that share 1 (window) is below share 2 (baseline).

    Returns (z, one-sided p = P(Z <= z)); (0.0, 1.0) when the pooled variance is zero.
    """
    x1, n1, x2, n2 = float(x1), float(n1), float(x2), float(n2)
    _check_counts(n1, x1)
    _check_counts(n2, x2)
    if n1 == 0.0 or n2 == 0.0:
        return _NAN, _NAN
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(max(0.0, pooled * (1.0 - pooled)) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 0.0, 1.0
    return _one_sided_lower(x1 / n1 - x2 / n2, se)


def nps_difference_z(
    p1: float, d1: float, n1: float, p2: float, d2: float, n2: float
) -> tuple[float, float]:
    """z test that NPS 1 (window) is below NPS 2 (baseline), unpooled multinomial SEs.

    Returns (z, one-sided p for a drop); with both SEs zero the limit: (0, 1) for equal
    scores, (-inf, 0) or (inf, 1) otherwise.
    """
    _check_counts(n1, p1, d1)
    _check_counts(n2, p2, d2)
    if n1 == 0.0 or n2 == 0.0:
        return _NAN, _NAN
    diff = nps_score(p1, d1, n1) - nps_score(p2, d2, n2)
    se = math.hypot(nps_se(p1, d1, n1), nps_se(p2, d2, n2))
    return _one_sided_lower(diff, se)


def welch_t(
    n1: float, s1: float, ss1: float, n2: float, s2: float, ss2: float
) -> tuple[float, float, float]:
    """Welch's t test that mean 1 (window) is below mean 2 (baseline), from running sums.

    Returns (t, Welch-Satterthwaite dof, one-sided p = P(T <= t)); NaNs if either side
    has fewer than two observations, and like scipy the limit when both variances are 0.
    """
    n1, n2 = float(n1), float(n2)
    m1, v1 = mean_var(n1, s1, ss1)
    m2, v2 = mean_var(n2, s2, ss2)
    if n1 < 2.0 or n2 < 2.0:
        return _NAN, _NAN, _NAN
    a1, a2 = v1 / n1, v2 / n2
    se2 = a1 + a2
    diff = m1 - m2
    if se2 == 0.0:
        z, p = _one_sided_lower(diff, 0.0)
        return z, _NAN, p
    dof = se2 * se2 / (a1 * a1 / (n1 - 1.0) + a2 * a2 / (n2 - 1.0))
    t = diff / math.sqrt(se2)
    return t, dof, t_cdf(t, dof)


def benjamini_hochberg(
    p_values: Sequence[float] | npt.NDArray[np.floating[Any]],
) -> npt.NDArray[np.float64]:
    """Benjamini-Hochberg adjusted q-values (monotone, capped at 1) in input order.

    Controls the false discovery rate across the many cells tested at once; NaN
    p-values (untestable cells) are left out of the family and get NaN q-values.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"expected a 1-d sequence of p-values, got shape {p.shape}")
    q = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    values = p[tested]
    if np.any((values < 0.0) | (values > 1.0)):
        raise ValueError("p-values must lie in [0, 1]")
    m = values.size
    if m == 0:
        return q
    order = np.argsort(values, kind="stable")
    scaled = values[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    adjusted = np.maximum(adjusted, values[order])  # p * m / m can round just below p
    out = np.empty(m)
    out[order] = adjusted
    q[tested] = out
    return q
