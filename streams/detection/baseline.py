"""The sequential test's baseline per hour of the day (or of the week), and how sure it
is of it.

Each hour of the day's expected value of a quantity (a share, NPS's two shares, a mean)
is the baseline's answers in that hour shrunk toward a curve through the day (for
``cycle: hour_of_week``, each hour of the week's, with weekly harmonics as well):

* the **curve** is the pooled mean or, when every hour of the day has answers and the
  hours differ from the pooled mean by more than noise (a chi-squared test at 10% on
  the weighted sum of squares the harmonics remove: a young baseline's rhythm must be
  found from one day, and a flat series that takes the harmonics by chance only pays
  their fit's variance in ``Q``), a weighted least-squares fit of
  ``harmonics`` pairs of daily sines and cosines. A smooth rhythm (a ±5-point cycle
  with its trough at night) is then the curve, not a spread about the day's mean: a
  young baseline with a hundred answers an hour no longer pulls every hour of the
  trough half way to the mean, all in the same direction (the false pages of a young
  cyclic deployment, issue 17);
* the **weight** of the curve in an hour's estimate, ``kappa`` answers, is estimated
  from how far the hours lie from the curve (empirical Bayes, by moments: the weighted
  residual sum of squares exceeds ``(hours - parameters) var`` by ``tau^2 (total -
  sum_h n_h leverage_h)``; ``kappa = var / tau^2``), never below ``cycle_prior + 1``.

The statistic's baseline correction ``Q`` needs the estimates' covariance, in units of
one answer's variance. Hour h's estimate is ``w_h mean_h + (1 - w_h) curve_h`` with
``w_h = n_h / (n_h + kappa)``: its own answers and the hour's scatter about the curve
are independent across hours, the curve's error is shared by all of them (one error
of the pooled mean or of a harmonic moves a whole stretch of the day one way):

    V = diag(1 / (n_h + kappa)) + (u_h u_h' x_h' M x_h'),  u_h = kappa / (n_h + kappa),
    M = (X' N X)^-1  (X: the curve's basis per hour, N: the hours' answers)

so a segment with A_h answers in hour h has ``Q = sum_h A_h^2 / (n_h + kappa) + z' M z``
with ``z = sum_h A_h u_h x_h``. An hour the baseline has not seen (a young history) is
the curve's value, worth ``cycle_prior + 1`` answers of its own (``u_h = 1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from streams.engine.metrics import FloatArray

DEFAULT_HARMONICS: Final = 2
"""Pairs of daily sines and cosines the curve may use (periods of 24 and 12 hours)."""
_Z90: Final = 1.2815515655446004  # the standard normal's 90% quantile


def chi2_90(dof: int) -> float:
    """The chi-squared distribution's 90% quantile (Wilson-Hilferty; within 1% from 2
    degrees of freedom on)."""
    k = float(dof)
    return float(k * (1.0 - 2.0 / (9.0 * k) + _Z90 * np.sqrt(2.0 / (9.0 * k))) ** 3)


WEEKLY_HARMONICS: Final = 3
"""Pairs of weekly sines and cosines an ``hour_of_week`` curve may add (periods of 7, 3.5
and 2.33 days): a weekend unlike the week days."""


def basis(n_cls: int, harmonics: int) -> tuple[FloatArray, dict[str, np.ndarray]]:
    """(C, p) the curve's regressors per class of hour (C = 1, 24 hours of the day or
    168 of the week): 1, then cos and sin of each daily harmonic (on the hour of the
    day), then for a week ``WEEKLY_HARMONICS`` weekly ones; and the columns of each
    group after the constant (``day``, ``week``), which the fit takes or leaves whole."""
    hour = np.arange(n_cls)
    cols, groups = [np.ones(n_cls)], {}
    if n_cls > 1:
        first = len(cols)
        for k in range(1, harmonics + 1):
            angle = 2.0 * np.pi * k * (hour % 24) / 24
            cols += [np.cos(angle), np.sin(angle)]
        groups["day"] = np.arange(first, len(cols))
    if n_cls > 24:
        first = len(cols)
        for k in range(1, WEEKLY_HARMONICS + 1):
            angle = 2.0 * np.pi * k * hour / n_cls
            cols += [np.cos(angle), np.sin(angle)]
        groups["week"] = np.arange(first, len(cols))
    return np.stack(cols, 1), {k: g for k, g in groups.items() if len(g)}


def _inverse(x: FloatArray, n_c: FloatArray, used: np.ndarray) -> FloatArray:
    """(S, p, p) ``(X' N X)^-1`` over each series' used columns (zero elsewhere)."""
    p = x.shape[1]
    gram = np.einsum("cp,cs,cq->spq", x, n_c, x)
    mask = used[:, :, None] & used[:, None, :]
    gram = np.where(mask, gram, np.eye(p)[None])
    ok = np.abs(np.linalg.det(gram)) > 1e-9
    gram[~ok] = np.eye(p)
    out: FloatArray = np.where(mask & ok[:, None, None], np.linalg.inv(gram), 0.0)
    return out


@dataclass(slots=True)
class Curve:
    """A rule's baseline curves for its series (S) and how much each hour borrows."""

    x: FloatArray  # (C, p) basis per hour of the day
    m: FloatArray  # (S, p, p) (X' N X)^-1 of each series' fit
    kappa: FloatArray  # (S,) answers of the curve in an hour's estimate
    n_c: FloatArray  # (C, S) baseline answers per hour of the day
    floor: float  # cycle_prior + 1: an unseen hour's own weight
    harmonic: np.ndarray  # (S,) bool: the series' curve has harmonics

    def fitted(self, sums: FloatArray, prior: tuple[float, float] = (0.0, 0.0)
               ) -> FloatArray:
        """(C, S) the curve of a quantity whose per-hour sums are ``sums`` (C, S),
        shifted by what ``prior`` (pseudo-sum, pseudo-answers) adds to the pooled mean."""
        beta = np.einsum("spq,cq,cs->sp", self.m, self.x, sums)
        total, n = sums.sum(0), self.n_c.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.nan_to_num((total + prior[0]) / (n + prior[1]) - total / n)
        out: FloatArray = self.x @ beta.T + shift
        return out

    def estimate(self, sums: FloatArray, prior: tuple[float, float] = (0.0, 0.0)
                 ) -> FloatArray:
        """(C, S) each hour's estimate: its sums and ``kappa`` answers of the curve."""
        out: FloatArray = (sums + self.kappa * self.fitted(sums, prior)) / self.weight
        return out

    @property
    def weight(self) -> FloatArray:
        """(C, S) what an hour's estimate divides by: its answers and ``kappa``."""
        out: FloatArray = self.n_c + self.kappa
        return out

    @property
    def own(self) -> FloatArray:
        """(C, S) 1 / each hour's own variance (its effective answers, ``eff``)."""
        out: FloatArray = np.where(self.n_c > 0, self.n_c + self.kappa, self.floor)
        return out

    @property
    def u(self) -> FloatArray:
        """(C, S) the curve's weight in each hour's estimate (1: an unseen hour)."""
        out: FloatArray = np.where(self.n_c > 0, self.kappa / self.weight, 1.0)
        return out

    def variance(self) -> FloatArray:
        """(C, S) an hour's estimate's variance per unit answer variance, from its
        answers and the curve's (the plug-in bias of ``_jensen``)."""
        lev = np.einsum("cp,spq,cq->cs", self.x, self.m, self.x)
        out: FloatArray = (self.n_c + self.kappa**2 * lev) / self.weight**2
        return out

    def z(self, n: FloatArray, cls: np.ndarray) -> FloatArray:
        """(S, K, p) each bucket's ``A u_h x_h`` (its answers ``n`` (S, K), hour
        classes ``cls`` (K,)); summed over a segment it is the ``z`` of ``Q``."""
        out: FloatArray = (n * self.u[cls].T)[..., None] * self.x[cls][None]
        return out


def curve(by_cls: FloatArray, x_sums: FloatArray, var: FloatArray, floor: float,
          harmonics: int) -> Curve:
    """The curve of every series from its baseline: ``by_cls`` (C, S) answers per hour of
    the day, ``x_sums`` (C, S) the sums of the quantity that decides the curve and the
    weight (the top share's, NPS's net, the mean's), ``var`` (S,) one answer's variance.
    """
    n_c = by_cls
    n_cls, n_series = n_c.shape
    x, groups = basis(n_cls, harmonics)
    p = x.shape[1]
    total = n_c.sum(0)
    seen = (n_c > 0).sum(0)
    day_seen = (n_c.reshape(-1, min(n_cls, 24), n_series).sum(0) > 0).sum(0)
    used = np.zeros((n_series, p), dtype=bool)
    used[:, 0] = True
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_c = np.where(n_c > 0, x_sums / n_c, 0.0)

        def rss(m: FloatArray) -> FloatArray:
            fit = x @ np.einsum("spq,cq,cs->sp", m, x, x_sums).T
            out: FloatArray = np.where(n_c > 0, n_c * (mean_c - fit) ** 2, 0.0).sum(0)
            return out

        m = _inverse(x, n_c, used)
        resid = rss(m)
        # each group of harmonics (daily, then weekly) once every hour it spans has
        # answers, and when it removes more than noise from the curve's residuals
        for kind, cols in groups.items():
            covered = day_seen == 24 if kind == "day" else seen == n_cls
            wider = used.copy()
            wider[:, cols] = True
            m_wider = _inverse(x, n_c, wider)
            resid_wider = rss(m_wider)
            take = (covered & (seen > wider.sum(1))
                    & ((resid - resid_wider) / np.maximum(var, 1e-12) >= chi2_90(len(cols))))
            used = np.where(take[:, None], wider, used)
            m = np.where(take[:, None, None], m_wider, m)
            resid = np.where(take, resid_wider, resid)
        params = used.sum(1)
        lev = np.einsum("cs,cp,spq,cq->s", n_c**2, x, m, x)
        tau2 = (resid - (seen - params) * var) / (total - lev)
        kappa = np.where(seen < params + 2, floor,
                         np.where(tau2 > 0, var / tau2, np.inf))
    kappa = np.clip(np.nan_to_num(kappa, nan=floor, posinf=np.inf), floor,
                    np.maximum(total, floor))
    harmonic = np.asarray(used[:, 1:].any(1), dtype=bool)
    return Curve(x, m, kappa, n_c, floor, harmonic)
