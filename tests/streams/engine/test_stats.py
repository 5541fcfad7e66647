"""streams.engine.stats against scipy / statsmodels, hand-computed values and simulation.

scipy and statsmodels are independent oracles here only; the module under test uses
``math`` and numpy alone.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as hst
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from streams.engine import stats

FAST = settings(max_examples=75, deadline=None, database=None)
Z = stats.Z95


def close(a: float, b: float, rel: float = 1e-12, abs_: float = 0.0) -> bool:
    """Equal within tolerances, with matching infinities and NaNs."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def sums(sample: np.ndarray) -> tuple[float, float, float]:
    """The running sums the engine keeps: count, sum, sum of squares."""
    return float(sample.size), float(sample.sum()), float((sample * sample).sum())


# ----------------------------------------------------------------------------- normal


@pytest.mark.parametrize(
    "p",
    [1e-300, 1e-100, 1e-20, 1e-9, 1e-4, 0.001, 0.01, 0.02425, 0.025, 0.05, 0.1, 0.3, 0.45,
     0.5, 0.55, 0.9, 0.95, 0.975, 0.97575, 0.99, 0.999, 1 - 1e-9, 1 - 1e-15],
)
def test_normal_quantile_matches_scipy(p: float) -> None:
    assert close(stats.normal_quantile(p), float(sps.norm.ppf(p)), rel=1e-13, abs_=1e-15)


def test_normal_quantile_edges_and_default_z() -> None:
    assert stats.normal_quantile(0.975) == pytest.approx(Z, rel=1e-15)
    assert stats.normal_quantile(0.5) == 0.0
    assert stats.normal_quantile(0.0) == -math.inf
    assert stats.normal_quantile(1.0) == math.inf
    for bad in (-0.1, 1.1, math.nan):
        assert math.isnan(stats.normal_quantile(bad))


@FAST
@given(hst.floats(min_value=1e-300, max_value=1.0, exclude_max=True))
def test_normal_quantile_property(p: float) -> None:
    x = stats.normal_quantile(p)
    assert close(x, float(sps.norm.ppf(p)), rel=1e-12, abs_=1e-15)
    if p <= 0.5:  # round trip through the accurate (lower) tail
        assert close(stats.normal_sf(-x), p, rel=1e-12)


@pytest.mark.parametrize("z", [-40.0, -8.0, -1.96, -0.5, 0.0, 0.3, 1.0, 1.959963984540054,
                               3.0, 6.0, 10.0, 20.0, 37.0])
def test_normal_sf_matches_scipy(z: float) -> None:
    # far out, the rounding of z / sqrt(2) alone moves erfc by ~2 z^2 eps (1.5e-13 at 37)
    assert close(stats.normal_sf(z), float(sps.norm.sf(z)), rel=1e-12)


def test_normal_sf_hand_values() -> None:
    assert stats.normal_sf(0.0) == 0.5
    assert stats.normal_sf(Z) == pytest.approx(0.025, rel=1e-14)


# --------------------------------------------------------------------------- Wilson


def test_wilson_hand_value_8_of_10() -> None:
    # p = 0.8, z^2/n = 0.38415; centre = (0.8 + 0.19207) / 1.38415 = 0.71674;
    # half = 1.95996 / 1.38415 * sqrt(0.016 + 0.0096036) = 1.41600 * 0.16001 = 0.22658
    low, high = stats.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert (low + high) / 2 == pytest.approx(0.71674, abs=1e-5)


@pytest.mark.parametrize(
    ("x", "n"),
    [(8, 10), (0, 10), (10, 10), (1, 1), (0, 1), (3, 7), (1, 2), (500, 1000), (1, 1000),
     (999, 1000), (12_345, 1_000_000), (2.5, 7.5)],
)
def test_wilson_matches_statsmodels(x: float, n: float) -> None:
    low, high = stats.wilson_interval(x, n)
    ref_low, ref_high = proportion_confint(x, n, alpha=0.05, method="wilson")
    assert close(low, float(ref_low), rel=1e-12, abs_=1e-15)
    assert close(high, float(ref_high), rel=1e-12, abs_=1e-15)


def test_wilson_other_confidence_level() -> None:
    z90 = stats.normal_quantile(0.95)
    low, high = stats.wilson_interval(37, 120, z=z90)
    ref_low, ref_high = proportion_confint(37, 120, alpha=0.10, method="wilson")
    assert close(low, float(ref_low)) and close(high, float(ref_high))


def test_wilson_degenerate() -> None:
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))
    low, high = stats.wilson_interval(20, 20)  # all successes: upper bound exactly 1
    assert high == 1.0
    assert low == pytest.approx(20 / (20 + Z * Z), rel=1e-14)
    low, high = stats.wilson_interval(0, 20)
    assert low == 0.0
    assert high == pytest.approx(Z * Z / (20 + Z * Z), rel=1e-14)


@pytest.mark.parametrize(("x", "n"), [(-1, 10), (11, 10), (0, -1)])
def test_wilson_rejects_impossible_counts(x: float, n: float) -> None:
    with pytest.raises(ValueError, match="inconsistent counts"):
        stats.wilson_interval(x, n)


@FAST
@given(hst.integers(1, 10**7).flatmap(lambda n: hst.tuples(hst.integers(0, n), hst.just(n))))
def test_wilson_property(xn: tuple[int, int]) -> None:
    x, n = xn
    low, high = stats.wilson_interval(x, n)
    ref_low, ref_high = proportion_confint(x, n, alpha=0.05, method="wilson")
    assert close(low, float(ref_low), rel=1e-10, abs_=1e-15)
    assert close(high, float(ref_high), rel=1e-10, abs_=1e-15)
    assert 0.0 <= low <= x / n <= high <= 1.0


# ------------------------------------------------------------------------------ NPS


def test_nps_hand_values() -> None:
    # 50 promoters, 30 passives, 20 detractors out of 100
    assert stats.nps_score(50, 20, 100) == pytest.approx(30.0, abs=1e-12)
    se = 100 * math.sqrt((0.5 + 0.2 - 0.3**2) / 100)
    assert se == pytest.approx(7.8102, abs=1e-4)
    assert stats.nps_se(50, 20, 100) == pytest.approx(se, rel=1e-14)
    low, high = stats.nps_interval(50, 20, 100)
    assert low == pytest.approx(30 - 1.96 * 7.8102, abs=1e-3)
    assert high == pytest.approx(30 + 1.96 * 7.8102, abs=1e-3)
    assert (low + high) / 2 == pytest.approx(30.0, abs=1e-12)


@pytest.mark.parametrize(
    ("promoters", "detractors", "n", "score"),
    [(10, 0, 10, 100.0), (0, 10, 10, -100.0), (0, 0, 10, 0.0), (1, 0, 1, 100.0)],
)
def test_nps_single_class_samples_have_zero_width(
    promoters: float, detractors: float, n: float, score: float
) -> None:
    assert stats.nps_score(promoters, detractors, n) == score
    assert stats.nps_se(promoters, detractors, n) == 0.0
    assert stats.nps_interval(promoters, detractors, n) == (score, score)


def test_nps_empty_and_clipping() -> None:
    assert math.isnan(stats.nps_score(0, 0, 0))
    assert math.isnan(stats.nps_se(0, 0, 0))
    assert all(math.isnan(v) for v in stats.nps_interval(0, 0, 0))
    # 9 promoters, 1 detractor: 80 +/- 1.96 * 18.97 would pass 100
    low, high = stats.nps_interval(9, 1, 10)
    assert high == 100.0
    assert low == pytest.approx(80 - Z * 100 * math.sqrt(0.36 / 10), rel=1e-14)
    low, high = stats.nps_interval(1, 9, 10)
    assert low == -100.0


@pytest.mark.parametrize(("promoters", "detractors", "n"), [(6, 5, 10), (-1, 0, 3), (1, 1, -2)])
def test_nps_rejects_impossible_counts(promoters: float, detractors: float, n: float) -> None:
    with pytest.raises(ValueError, match="inconsistent counts"):
        stats.nps_score(promoters, detractors, n)
    with pytest.raises(ValueError, match="inconsistent counts"):
        stats.nps_interval(promoters, detractors, n)


def nps_sample(promoters: int, passives: int, detractors: int) -> np.ndarray:
    """Per-response NPS contributions: +100 promoter, 0 passive, -100 detractor."""
    return np.repeat([100.0, 0.0, -100.0], [promoters, passives, detractors])


@FAST
@given(hst.integers(0, 3000), hst.integers(0, 3000), hst.integers(0, 3000))
def test_nps_matches_explicit_sample(promoters: int, passives: int, detractors: int) -> None:
    n = promoters + passives + detractors
    assume(n > 0)
    sample = nps_sample(promoters, passives, detractors)
    score = stats.nps_score(promoters, detractors, n)
    se = stats.nps_se(promoters, detractors, n)
    assert close(score, float(sample.mean()), rel=1e-12, abs_=1e-10)
    assert close(se, float(sample.std(ddof=0)) / math.sqrt(n), rel=1e-9, abs_=1e-10)
    low, high = stats.nps_interval(promoters, detractors, n)
    assert -100.0 <= low <= score <= high <= 100.0


def test_nps_interval_coverage_by_simulation() -> None:
    rng = np.random.default_rng(20_240_601)
    shares = (0.45, 0.30, 0.25)  # true NPS = 20 points
    counts = rng.multinomial(400, shares, size=2000)
    covered = 0
    for promoters, _passives, detractors in counts:
        low, high = stats.nps_interval(float(promoters), float(detractors), 400.0)
        covered += low <= 20.0 <= high
    assert 0.93 <= covered / len(counts) <= 0.97


# ---------------------------------------------------------------------------- means


@pytest.mark.parametrize("seed", range(6))
def test_mean_interval_matches_scipy_t_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sample = rng.integers(1, 8, size=[2, 3, 5, 12, 40, 500][seed]).astype(float)
    assume_var = sample.var(ddof=1)
    n, total, total_sq = sums(sample)
    mean, var = stats.mean_var(n, total, total_sq)
    assert close(mean, float(sample.mean()), rel=1e-13)
    assert close(var, float(assume_var), rel=1e-10, abs_=1e-12)
    low, high = stats.mean_interval(n, total, total_sq)
    ref_low, ref_high = sps.t.interval(0.95, n - 1, loc=sample.mean(), scale=sps.sem(sample))
    if assume_var == 0:
        assert low == high == mean
    else:
        assert close(low, float(ref_low), rel=1e-10) and close(high, float(ref_high), rel=1e-10)


def test_mean_interval_hand_value_and_normal_z() -> None:
    # 10 answers, sum 30, sum of squares 100: mean 3, s^2 = (100 - 90) / 9, t(0.975, 9) = 2.262157
    half = 2.262157162798 * math.sqrt(10 / 9 / 10)
    low, high = stats.mean_interval(10, 30, 100)
    assert low == pytest.approx(3 - half, rel=1e-11) and high == pytest.approx(3 + half, rel=1e-11)
    low, high = stats.mean_interval(10, 30, 100, z=Z)
    assert high - 3 == pytest.approx(Z * math.sqrt(1 / 9), rel=1e-14)


def test_mean_degenerate() -> None:
    assert all(math.isnan(v) for v in stats.mean_var(0, 0, 0))
    mean, var = stats.mean_var(1, 4.0, 16.0)
    assert mean == 4.0 and math.isnan(var)
    for n, total, total_sq in ((0, 0, 0), (1, 4.0, 16.0)):
        assert all(math.isnan(v) for v in stats.mean_interval(n, total, total_sq))
    # round-off can push the sum of squares just below total^2 / n: clamp, don't NaN
    mean, var = stats.mean_var(3, 0.3, 0.0299999999999)
    assert var == 0.0
    assert stats.mean_interval(3, 0.3, 0.0299999999999) == (mean, mean)
    with pytest.raises(ValueError, match="negative count"):
        stats.mean_var(-1, 0, 0)


@FAST
@given(hst.lists(hst.integers(0, 10), min_size=2, max_size=80))
def test_mean_var_matches_numpy(answers: list[int]) -> None:
    sample = np.array(answers, dtype=float)
    mean, var = stats.mean_var(*sums(sample))
    assert close(mean, float(sample.mean()), rel=1e-13)
    assert close(var, float(sample.var(ddof=1)), rel=1e-9, abs_=1e-12)


# ------------------------------------------------------------------------ Student t

DOFS = [0.5, 1, 1.5, 2, 3, 5, 9, 10, 29, 29.9, 30, 31, 50, 100, 1e3, 9999, 1e4, 10001, 1e5, 1e6]
PS = [1e-12, 1e-6, 1e-3, 0.025, 0.1, 0.3, 0.4999, 0.5, 0.6, 0.9, 0.975, 0.999, 1 - 1e-9]


@pytest.mark.parametrize("dof", DOFS)
def test_t_quantile_matches_scipy(dof: float) -> None:
    for p in PS:
        assert close(stats.t_quantile(p, dof), float(sps.t.ppf(p, dof)), rel=1e-10,
                     abs_=1e-14), (p, dof)


@pytest.mark.parametrize("p", [1e-300, 1e-12, 0.01, 0.2, 0.49, 0.51, 0.8, 0.99, 1 - 1e-12])
def test_t_quantile_closed_forms(p: float) -> None:
    # dof 1 is the Cauchy: t = tan(pi (p - 1/2)), written as a cotangent of the tail
    cauchy = math.copysign(1 / math.tan(math.pi * min(p, 1 - p)), p - 0.5)
    assert close(stats.t_quantile(p, 1), cauchy, rel=1e-11)
    assert close(stats.t_quantile(p, 2), (2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-11)


def test_t_quantile_edges() -> None:
    assert stats.t_quantile(0.975, 9) == pytest.approx(2.262157162798, rel=1e-12)
    assert stats.t_quantile(0.0, 5) == -math.inf
    assert stats.t_quantile(1.0, 5) == math.inf
    assert stats.t_quantile(0.5, 5) == 0.0
    assert stats.t_quantile(0.975, math.inf) == pytest.approx(Z, rel=1e-15)
    for p, dof in ((math.nan, 5), (0.5, math.nan), (0.9, 0.0), (0.9, -3), (1.5, 5)):
        assert math.isnan(stats.t_quantile(p, dof))
    # the Cornish-Fisher start at dof >= 30 leaves no seam
    assert stats.t_quantile(0.975, 29.9999999) == pytest.approx(
        stats.t_quantile(0.975, 30.0), rel=1e-8)


@FAST
@given(hst.floats(1e-12, 1 - 1e-12), hst.floats(0.5, 1e6))
def test_t_quantile_property(p: float, dof: float) -> None:
    t = stats.t_quantile(p, dof)
    assert close(t, float(sps.t.ppf(p, dof)), rel=1e-9, abs_=1e-13)
    tail = min(p, 1 - p)
    assert close(stats.t_cdf(-abs(t), dof), tail, rel=1e-10)


@pytest.mark.parametrize("dof", DOFS)
def test_t_cdf_matches_scipy(dof: float) -> None:
    for t in (-1e5, -100, -40, -10, -5, -2, -1, -0.1, 0.0, 0.5, 2, 5, 40):
        assert close(stats.t_cdf(t, dof), float(sps.t.cdf(t, dof)), rel=1e-11), (t, dof)


@pytest.mark.parametrize("t", [-1e200, -1e30, -1e4, -3.0, -1e-4, -1e-8, 0.0, 1e-8, 0.7, 1e6])
def test_t_cdf_closed_forms(t: float) -> None:
    # scipy.stats.t.cdf at df=1 is off by ~1.6e-9 for |t| around 1e-8 (the Cauchy CDF is
    # right) and underflows to 0 at t=-1e200, hence the closed forms here, written
    # without cancellation in the lower tail.
    lower = math.atan(1 / abs(t)) / math.pi if t else 0.5
    assert close(stats.t_cdf(t, 1), lower if t <= 0 else 1 - lower, rel=1e-13)
    if abs(t) < 1e100:
        r = math.sqrt(2 + t * t)
        lower = 1 / (r * (r + abs(t)))  # = 1/2 - |t| / (2 r)
        assert close(stats.t_cdf(t, 2), lower if t <= 0 else 1 - lower, rel=1e-12)


def test_t_cdf_edges() -> None:
    assert stats.t_cdf(0.0, 3) == 0.5
    assert stats.t_cdf(-math.inf, 3) == 0.0 and stats.t_cdf(math.inf, 3) == 1.0
    assert stats.t_cdf(-1.5, math.inf) == pytest.approx(float(sps.norm.cdf(-1.5)), rel=1e-14)
    for t, dof in ((math.nan, 3), (1.0, math.nan), (1.0, 0.0), (1.0, -1)):
        assert math.isnan(stats.t_cdf(t, dof))
    # the switch to Hill's expansion above 1e4 dof leaves no seam
    for t in (-0.5, -3.0, -12.0):
        assert stats.t_cdf(t, 1e4) == pytest.approx(stats.t_cdf(t, 1e4 * (1 + 1e-12)), rel=1e-12)


@FAST
@given(hst.floats(-60, 60), hst.floats(0.5, 1e6))
def test_t_cdf_property(t: float, dof: float) -> None:
    ours = stats.t_cdf(t, dof)
    assert close(ours, float(sps.t.cdf(t, dof)), rel=1e-10, abs_=1e-300 if dof != 1 else 2e-9)
    assert close(ours + stats.t_cdf(-t, dof), 1.0, rel=1e-14)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [(3, 20, 9, 25), (40, 100, 50, 100), (60, 100, 50, 100), (0, 10, 5, 10), (10, 10, 5, 10),
     (1, 3, 900, 1000), (480, 1000, 5200, 10_000)],
)
def test_two_proportion_z_matches_statsmodels(x1: int, n1: int, x2: int, n2: int) -> None:
    z, p = stats.two_proportion_z(x1, n1, x2, n2)
    ref_z, ref_p = proportions_ztest([x1, x2], [n1, n2], alternative="smaller")
    assert close(z, float(ref_z), rel=1e-12) and close(p, float(ref_p), rel=1e-11)


def test_two_proportion_z_degenerate() -> None:
    assert stats.two_proportion_z(0, 5, 0, 7) == (0.0, 1.0)
    assert stats.two_proportion_z(5, 5, 7, 7) == (0.0, 1.0)
    assert all(math.isnan(v) for v in stats.two_proportion_z(0, 0, 3, 7))
    assert all(math.isnan(v) for v in stats.two_proportion_z(3, 7, 0, 0))
    with pytest.raises(ValueError, match="inconsistent counts"):
        stats.two_proportion_z(8, 7, 3, 7)


@FAST
@given(hst.integers(1, 5000).flatmap(lambda n: hst.tuples(hst.integers(0, n), hst.just(n))),
       hst.integers(1, 50_000).flatmap(lambda n: hst.tuples(hst.integers(0, n), hst.just(n))))
def test_two_proportion_z_property(a: tuple[int, int], b: tuple[int, int]) -> None:
    (x1, n1), (x2, n2) = a, b
    assume(0 < x1 + x2 < n1 + n2)
    z, p = stats.two_proportion_z(x1, n1, x2, n2)
    ref_z, ref_p = proportions_ztest([x1, x2], [n1, n2], alternative="smaller")
    assert close(z, float(ref_z), rel=1e-9, abs_=1e-12)
    assert close(p, float(ref_p), rel=1e-8, abs_=1e-300)


def nps_difference_reference(
    window: tuple[int, int, int], baseline: tuple[int, int, int]
) -> tuple[float, float]:
    """Unpooled z on explicit +100/0/-100 samples, with population variances."""
    a, b = nps_sample(*window), nps_sample(*baseline)
    se = math.sqrt(a.var(ddof=0) / a.size + b.var(ddof=0) / b.size)
    z = (a.mean() - b.mean()) / se
    return float(z), float(sps.norm.cdf(z))


def test_nps_difference_hand_value() -> None:
    # window 40/30/30 of 200 (NPS 10), baseline 50/30/20 of 400 (NPS 30)
    se = math.hypot(100 * math.sqrt((0.7 - 0.1**2) / 200), 100 * math.sqrt((0.7 - 0.3**2) / 400))
    z, p = stats.nps_difference_z(80, 60, 200, 200, 80, 400)
    assert z == pytest.approx(-20 / se, rel=1e-13)
    assert p == pytest.approx(float(sps.norm.cdf(-20 / se)), rel=1e-12)
    ref_z, ref_p = nps_difference_reference((80, 60, 60), (200, 120, 80))
    assert close(z, ref_z, rel=1e-12) and close(p, ref_p, rel=1e-11)


@FAST
@given(hst.tuples(hst.integers(0, 400), hst.integers(0, 400), hst.integers(0, 400)),
       hst.tuples(hst.integers(0, 2000), hst.integers(0, 2000), hst.integers(0, 2000)))
def test_nps_difference_property(
    window: tuple[int, int, int], baseline: tuple[int, int, int]
) -> None:
    assume(sum(window) > 0 and sum(baseline) > 0)
    assume(max(window) < sum(window) or max(baseline) < sum(baseline))  # some variance
    z, p = stats.nps_difference_z(window[0], window[2], sum(window),
                                  baseline[0], baseline[2], sum(baseline))
    ref_z, ref_p = nps_difference_reference(window, baseline)
    assert close(z, ref_z, rel=1e-9, abs_=1e-9)
    assert close(p, ref_p, rel=1e-7, abs_=1e-300)


def test_nps_difference_degenerate() -> None:
    assert all(math.isnan(v) for v in stats.nps_difference_z(0, 0, 0, 5, 1, 10))
    assert stats.nps_difference_z(3, 0, 3, 5, 0, 5) == (0.0, 1.0)  # both all promoters
    assert stats.nps_difference_z(0, 3, 3, 5, 0, 5) == (-math.inf, 0.0)  # limit, like scipy
    assert stats.nps_difference_z(5, 0, 5, 0, 3, 3) == (math.inf, 1.0)


@pytest.mark.parametrize("seed", range(8))
def test_welch_t_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n1, n2 = [(2, 2), (2, 30), (5, 8), (12, 30), (30, 12), (200, 40), (3000, 50_000),
              (25, 25)][seed]
    a = rng.normal(3.0, 1.0, n1).round(2)
    b = rng.normal(3.4, [0.3, 2.0][seed % 2], n2).round(2)
    t, dof, p = stats.welch_t(*sums(a), *sums(b))
    ref = sps.ttest_ind(a, b, equal_var=False, alternative="less")
    assert close(t, float(ref.statistic), rel=1e-10)
    assert close(dof, float(ref.df), rel=1e-10)
    assert close(p, float(ref.pvalue), rel=1e-9)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy's side
@FAST
@given(hst.lists(hst.integers(0, 10), min_size=2, max_size=60),
       hst.lists(hst.integers(0, 10), min_size=2, max_size=300))
def test_welch_t_property(window: list[int], baseline: list[int]) -> None:
    a, b = np.array(window, dtype=float), np.array(baseline, dtype=float)
    assume(a.var() > 0 or b.var() > 0)
    t, dof, p = stats.welch_t(*sums(a), *sums(b))
    ref = sps.ttest_ind(a, b, equal_var=False, alternative="less")
    assert close(t, float(ref.statistic), rel=1e-9, abs_=1e-12)
    assert close(dof, float(ref.df), rel=1e-9)
    assert close(p, float(ref.pvalue), rel=1e-6, abs_=1e-300)
    assert close(p, float(sps.t.cdf(t, dof)), rel=1e-10, abs_=1e-300)


def test_welch_t_degenerate() -> None:
    assert all(math.isnan(v) for v in stats.welch_t(1, 3, 9, 10, 30, 100))
    assert all(math.isnan(v) for v in stats.welch_t(10, 30, 100, 0, 0, 0))
    t, dof, p = stats.welch_t(2, 2, 2, 3, 3, 3)  # both constant and equal
    assert (t, p) == (0.0, 1.0) and math.isnan(dof)
    t, dof, p = stats.welch_t(2, 2, 2, 2, 10, 50)  # constant 1s against constant 5s
    assert (t, p) == (-math.inf, 0.0) and math.isnan(dof)


def test_returns_plain_floats_for_numpy_inputs() -> None:
    n, s, ss = np.float64(10), np.float64(30), np.float64(100)
    values = [*stats.wilson_interval(np.float64(3), n), stats.nps_score(s / 10, s / 15, n),
              *stats.nps_interval(s / 10, s / 15, n, z=np.float64(Z)),
              *stats.mean_var(n, s, ss), *stats.mean_interval(n, s, ss, z=np.float64(Z)),
              *stats.two_proportion_z(np.float64(3), n, np.float64(6), n),
              *stats.welch_t(n, s, ss, n, s + 5, ss + 40), stats.t_cdf(np.float64(-1), n),
              stats.t_quantile(np.float64(0.9), n), stats.normal_quantile(np.float64(0.9))]
    assert all(type(v) is float for v in values)


# ------------------------------------------------------------------ Benjamini-Hochberg


@pytest.mark.parametrize(
    "p_values",
    [[0.01], [0.5, 0.01, 0.03, 0.04, 0.2], [0.04, 0.04, 0.04], [1.0, 0.0, 0.5],
     [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]],
)
def test_benjamini_hochberg_matches_statsmodels(p_values: list[float]) -> None:
    q = stats.benjamini_hochberg(p_values)
    np.testing.assert_allclose(q, multipletests(p_values, method="fdr_bh")[1], rtol=1e-14)


def test_benjamini_hochberg_edges() -> None:
    empty = stats.benjamini_hochberg([])
    assert empty.shape == (0,) and empty.dtype == np.float64
    # NaNs (untestable cells) are left out of the family of tests
    q = stats.benjamini_hochberg(np.array([0.01, math.nan, 0.04]))
    np.testing.assert_allclose(q, [0.02, math.nan, 0.04])
    assert np.isnan(stats.benjamini_hochberg([math.nan])).all()
    with pytest.raises(ValueError, match="lie in"):
        stats.benjamini_hochberg([0.2, 1.2])
    with pytest.raises(ValueError, match="1-d"):
        stats.benjamini_hochberg(np.zeros((2, 2)))


@FAST
@given(hst.lists(hst.floats(0.0, 1.0), min_size=1, max_size=60))
def test_benjamini_hochberg_property(p_values: list[float]) -> None:
    p = np.array(p_values)
    q = stats.benjamini_hochberg(p)
    np.testing.assert_allclose(q, multipletests(p, method="fdr_bh")[1], rtol=1e-12, atol=1e-300)
    assert np.all(q >= p) and np.all(q <= 1.0)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(q[order]) >= 0)  # monotone in p
