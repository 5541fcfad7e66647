"""The sequential scan as first written (commit 26a9315): every bucket summed and every
segment's statistic computed at each evaluation, with no memo. Kept as the reference
the memoized ``streams.detection.sequential.scan`` must agree with.

Since issue 17's destination grid, a share's hypotheses are its shifts times where the
top's lost answers go (to the bottom, to the middle), written out here on their own."""

from __future__ import annotations

import numpy as np

from streams.detection.rules import SHARES, DropRule
from streams.detection.sequential import (
    CLASSES,
    HOUR,
    MIN_CATEGORY,
    MINUTE,
    Buckets,
    Layout,
    Scan,
    _curve,
    layout,
)
from streams.detection.spans import copies
from streams.engine.engine import Engine
from streams.engine.metrics import FloatArray

_N, _SUM, _SUMSQ, _TOP, _BOTTOM = range(5)


def _classes(buckets: np.ndarray, per_hour: int, n_cls: int) -> np.ndarray:
    out: np.ndarray = (buckets // per_hour) % n_cls
    return out


def reference_scan(engine: Engine, rule: DropRule, now: int, sids: list[int],
                   buckets: Buckets, restarts: FloatArray | None = None) -> Scan:
    """The sequential statistics of ``rule``'s series ``sids`` at ``now``."""
    lay = layout(engine, rule, now)
    n_cls = CLASSES[rule.cycle]  # (changed with hour_of_week)
    ix = np.asarray(sids, dtype=np.int64)
    base = buckets("3600s", lay.base_first, lay.base_last)[:, ix]  # (Kb, S, 5)
    mon = np.concatenate([buckets("3600s", lay.hour_first, lay.hour_last)[:, ix],
                          buckets("60s", lay.minute_first, lay.minute_last)[:, ix]])
    hour_ids = np.arange(lay.hour_first, lay.hour_last + 1)
    minute_ids = np.arange(lay.minute_first, lay.minute_last + 1)
    starts = np.concatenate([hour_ids * HOUR, minute_ids * MINUTE])
    mon_cls = np.concatenate([_classes(hour_ids, 1, n_cls), _classes(minute_ids, 60, n_cls)])
    base_cls = _classes(np.arange(lay.base_first, lay.base_last + 1), 1, n_cls)
    n_series = len(sids)
    by_cls = np.stack([base[base_cls == h].sum(0) for h in range(n_cls)])
    pooled = base.sum(0)  # (S, 5)
    mon_total = mon.sum(0)
    base_n = pooled[:, _N]
    # (added later) each hour shrunk toward the baseline curve with an estimated weight
    fit = _curve(rule, by_cls, pooled)
    shifts = np.asarray(rule.shifts)  # (G0,)
    g0 = len(shifts)
    grid = 2 * g0 if rule.metric in SHARES else g0  # shares: x (to bottom, to middle)
    live = np.ones((n_series, grid), dtype=bool)
    delta = np.tile(shifts, (n_series, grid // g0))
    with np.errstate(divide="ignore", invalid="ignore"):
        # coefficients (C, S, G) of the LLR: llr = a*n + b*sum + c*top + d*bottom
        zeros = np.zeros((n_cls, n_series, grid))
        a, b, c, d = zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy()
        if rule.metric in SHARES:
            p_pool = (pooled[:, _TOP] + 0.5) / (base_n + 1.0)
            q_pool = (pooled[:, _BOTTOM] + 0.5) / (base_n + 1.0)
            p0 = np.clip(fit.estimate(by_cls[..., _TOP], (0.5, 1.0)), 0.005, 0.995)[..., None]
            q0 = np.clip(fit.estimate(by_cls[..., _BOTTOM], (0.5, 1.0)), 0.005, 0.995)[..., None]
            m0 = np.clip(1 - p0 - q0, 0.005, 0.995)
            sigma = np.sqrt(p_pool * (1 - p_pool))
            p1 = np.maximum(p0 - shifts * sigma[:, None], 0.1 * p0)
            q1, m1 = q0 + (p0 - p1), m0 + (p0 - p1)
            # to the bottom: top and bottom answers; to the middle: top and middle ones
            # (middle = n - top - bottom)
            # less each category's plug-in bias (Jensen: log((r0 + g) / r0) is convex)
            var = fit.variance()[..., None]
            jt = 0.5 * var * (1 - p0) * (1 - (p0 / p1) ** 2)
            jb = 0.5 * var * (1 - q0) * (1 - (q0 / q1) ** 2)
            jm = 0.5 * var * (1 - m0) * (1 - (m0 / m1) ** 2)
            a[..., :g0] = -(jt + jb)
            c[..., :g0] = np.log(p1 / p0)
            d[..., :g0] = np.log(q1 / q0)
            a[..., g0:] = np.log(m1 / m0) - (jt + jm)
            c[..., g0:] = np.log(p1 / p0) - np.log(m1 / m0)
            d[..., g0:] = -np.log(m1 / m0)
            pp, qq = np.clip(p_pool, 0.005, 0.995)[:, None], np.clip(q_pool, 0.005, 0.995)[:, None]
            mm = np.clip(1 - pp - qq, 0.005, 0.995)
            ff = np.minimum(shifts * sigma[:, None], 0.9 * pp)
            kl_top = -pp * np.log((pp - ff) / pp)
            delta[:, :g0] = np.sqrt(2 * (kl_top - qq * np.log((qq + ff) / qq)))
            delta[:, g0:] = np.sqrt(2 * (kl_top - mm * np.log((mm + ff) / mm)))
            # (added later) a thin bottom or middle: the top-only Bernoulli instead
            middle = base_n - pooled[:, _TOP] - pooled[:, _BOTTOM]
            thin = (pooled[:, _BOTTOM] < MIN_CATEGORY) | (middle < MIN_CATEGORY)
            r0, r1 = 1 - p0, 1 - p1
            jr = 0.5 * var * (1 - r0) * (1 - (r0 / r1) ** 2)
            a[:, thin, :g0] = (np.log(r1 / r0) - (jt + jr))[:, thin]
            c[:, thin, :g0] = (np.log(p1 / p0) - np.log(r1 / r0))[:, thin]
            d[:, thin, :g0] = 0.0
            kl_rest = kl_top - (1 - pp) * np.log((1 - pp + ff) / (1 - pp))
            delta[thin, :g0] = np.sqrt(2 * kl_rest)[thin]
            live[:, g0:] = ~thin[:, None]
        elif rule.metric == "nps":
            pp_pool = (pooled[:, _TOP] + 0.5) / (base_n + 1.0)
            pd_pool = (pooled[:, _BOTTOM] + 0.5) / (base_n + 1.0)
            pp0 = np.clip(fit.estimate(by_cls[..., _TOP], (0.5, 1.0)), 0.005, 0.995)[..., None]
            pd0 = np.clip(fit.estimate(by_cls[..., _BOTTOM], (0.5, 1.0)), 0.005, 0.995)[..., None]
            sd = np.sqrt(np.maximum(pp_pool + pd_pool - (pp_pool - pd_pool) ** 2, 1e-4))
            sigma = 100.0 * sd
            f = np.minimum(shifts * sd[:, None] / 2.0, 0.9 * pp0)
            c = np.log((pp0 - f) / pp0)
            d = np.log((pd0 + f) / pd0)
        else:
            mean_pool = pooled[:, _SUM] / np.maximum(base_n, 1.0)
            var = pooled[:, _SUMSQ] / np.maximum(base_n, 1.0) - mean_pool**2
            sigma = np.sqrt(np.maximum(var, 1e-4 * np.maximum(mean_pool**2, 1.0)))
            mu0 = fit.estimate(by_cls[..., _SUM])[..., None]
            k = shifts / sigma[:, None]  # (S, G): delta/sigma^2 in the metric's units
            a = k * mu0 - (shifts**2 / 2.0)
            b = -k + zeros
    n = np.ascontiguousarray(mon[..., _N].T)  # (S, K)
    # (S, K, G): each bucket's sums times its hour's coefficients, in one contraction
    coef = np.nan_to_num(np.stack([a, b, c, d], -1), nan=0.0, posinf=0.0, neginf=0.0)
    coef[:, ~live] = 0.0
    sums = mon[..., [_N, _SUM, _TOP, _BOTTOM]]  # (K, S, 4)
    llr = np.einsum("ksj,ksgj->skg", sums, coef[mon_cls], optimize=True)
    seg_llr = np.flip(np.cumsum(np.flip(llr, 1), 1), 1)  # (S, K, G) from bucket k to now
    seg_n = np.flip(np.cumsum(np.flip(n, 1), 1), 1)  # (S, K)
    # (changed with the baseline curve) Q = A' V A with the hours' full covariance
    # V = diag(1 / own) + (u u') o (X M X'), A the segment's answers per class
    counts = np.stack([np.where(mon_cls == h, n, 0.0) for h in range(n_cls)], -1)
    per_cls = np.flip(np.cumsum(np.flip(counts, 1), 1), 1)  # (S, K, C) from k on
    cov = np.einsum("cs,cp,spq,dq,ds->scd", fit.u, fit.x, fit.m, fit.x, fit.u)
    cov = cov + np.einsum("cs,cd->scd", 1.0 / fit.own, np.eye(n_cls))
    q = np.einsum("skc,scd,skd->sk", per_cls, cov, per_cls)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(seg_n > 0, 1.0 / (1.0 + q / seg_n), 0.0)
    stat = seg_llr * shrink[..., None]  # (S, K, G)
    if restarts is not None:  # (added with the restart after a page) only later segments
        with np.errstate(invalid="ignore"):
            stat[starts[None, :] <= restarts[:, None]] = -np.inf
    # (changed with the young-history layout) the last maximum: see ``last_argmax``
    best = stat.shape[1] - 1 - stat[:, ::-1].argmax(1)  # (S, G)
    rows = np.arange(n_series)[:, None]
    top = np.maximum(stat[rows, best, np.arange(grid)[None, :]], 0.0)
    top[~live] = 0.0
    base_seconds = max(lay.base_last - lay.base_first + 1, 1) * HOUR
    mon_seconds = (lay.hour_last - lay.hour_first + 1) * HOUR + (now % HOUR) + HOUR
    volume = np.maximum(base_n / base_seconds, mon_total[:, _N] / mon_seconds)
    repeated = np.array(copies(engine, sids, pooled_full(buckets, lay, engine), ),
                        dtype=bool) if sids else np.zeros(0, dtype=bool)
    tested = (base_n > 0) & ~repeated
    return Scan(rule, sids, top, starts[best].astype(np.float64), seg_n[rows, best],
                base_n, np.asarray(sigma, dtype=np.float64), volume, tested, live,
                np.nan_to_num(delta, nan=0.0))


def pooled_full(buckets: Buckets, lay: Layout, engine: Engine) -> FloatArray:
    """Every series' sums over the baseline and the horizon (to find copies)."""
    del engine
    out: FloatArray = (buckets("3600s", lay.base_first, lay.hour_last).sum(0)
                       + buckets("60s", lay.minute_first, lay.minute_last).sum(0))
    return out
