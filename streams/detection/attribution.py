"""Why did it drop? Attribute a score change to the parts of the scope that explain it.

The decomposition
-----------------
For every metric the engine keeps, a scope's score is a response-weighted average of the
scores of its parts: ``S = sum_i w_i s_i`` with ``w_i = n_i / N`` a value's share of the
scope's answers and ``s_i = x_i / n_i`` its own score, where ``x`` is the top count for
shares (CSAT top-2-box, resolution), ``100 (promoters - detractors)`` for NPS and the sum
of the answers for means (CES, ratings, sentiment). Between the baseline (0) and the
window (1) this module uses the symmetric (midpoint) Kitagawa decomposition::

    S1 - S0 = sum_i  wbar_i (s1_i - s0_i)             rate effect of value i
            + sum_i (w1_i - w0_i) (sbar_i - Sbar)     mix effect of value i

with ``wbar``, ``sbar`` the midpoints of a value's two shares and two scores and ``Sbar =
(S0 + S1) / 2``. It is exact: ``w1 s1 - w0 s0 = wbar (s1 - s0) + sbar (w1 - w0)`` for
every value, so there is no interaction residue to hand out arbitrarily (the one-sided
Oaxaca/Laspeyres form, weights held at the baseline, leaves ``sum dw ds`` over), and it
is symmetric in time (swapping the windows flips every sign and nothing else). The mix
term is centred on ``Sbar``: since ``sum_i (w1_i - w0_i) = 0`` that changes no total, but
it makes a value's mix effect mean what an on-call engineer expects ("more answers came
from a part scoring below the scope's average"), whatever the origin of the scale (NPS
can be negative; a 1-5 mean is never near 0). Uncentred, any value whose share grew would
carry a large mix effect just for having a positive score.

A value seen on one side only takes the other side's score as its missing one: its rate
effect is 0 and its whole contribution is mix (it entered or left the mix). The identity
holds whatever is chosen, as its share on the missing side is 0.

Each decomposition is exact on its own, but levels do not nest exactly: the contributions
of (channel, segment) cells within chat add up to nearly, not exactly, chat's contribution
in the channel decomposition (the midpoint weights differ).

Significance of a value's own change uses the tests of drop detection (``significance.compare``:
two-proportion on the arcsine scale for shares, the NPS multinomial SE, Welch's t for
means; one-sided, "window below baseline"), with Benjamini-Hochberg q-values across the
values of one decomposition. ``mix_p`` is the two-sided arcsine test of the change in the
value's share of answers.

Drill-down, grouping, journeys
------------------------------
``explain`` decomposes a series over every configured scope that refines it by one
dimension (overall -> channel, touchpoint, ...; channel=chat -> (channel, segment) within
chat), ranks those by how much their leading value explains, and where that value is
dominant (>= ``DOMINANT`` of the change) decomposes the series again over the cells one
dimension finer within it (chat -> chat/enterprise), at most ``MAX_DEPTH`` levels deep.
Cost is one pass over the series registry per rule evaluation and, per explained alert,
one test per child series of the configured scopes that refine it; at most
``MAX_EXPLAINED`` alerts per rule and evaluation are explained.

``group_alerts`` and ``explaining_parents`` put the alerts of one rule that fired together
under the alert that explains them: alert B is explained by alert A when A's scope is
strictly inside B's and A's attribution names B's scope as a dominant cell; the nearest
such A is B's parent, so one incident pages once (the root), with the child named.

Journeys: when a drop's scope is one journey type (or its decomposition is dominated by
one), every touchpoint series within that journey type (any metric, from the
(journey_type, touchpoint) scope, if configured) is tested. If none dropped, the drop is
reported as being in the hand-offs / channel switching, not in one touchpoint. Limits:
the engine keeps no per-journey score in time windows, so "the journey dropped" means the
answers given within journeys of that type, pooled; a touchpoint that alone carries the
alert's metric (a journey-end survey) is taken to be the journey's own verdict and left
out of the check; and the satisfaction-by-channel-count bands (``engine.journeys``) are
cumulative since the engine started, so they are attached as context, not tested for a
change between the windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import numpy as np

from streams.detection.alerts import Alert
from streams.detection.rules import default_min_effect
from streams.detection.significance import arcsine_z, compare
from streams.engine import stats
from streams.engine.config import DIMENSIONS
from streams.engine.engine import Engine
from streams.engine.metrics import BOTTOM, NCOLS, SUM, TOP, FloatArray, N
from streams.engine.store import SeriesKey

DOMINANT: Final = 0.6
"""A value explaining at least this share of the change dominates it (drill, grouping)."""
TOP_VALUES: Final = 5
"""Values reported per decomposition; the rest fold into "other (k values)"."""
MAX_DEPTH: Final = 2
"""Decomposition levels below the alert's scope (1: by dimension; 2: one drill-down)."""
MAX_EXPLAINED: Final = 20
"""Alerts of one rule explained per evaluation (the most significant first)."""
EVIDENCE_DIMENSIONS: Final = 3
"""Level-one decompositions kept in an alert's evidence (the most telling first)."""
JOURNEY_MIN_N: Final = 30
"""Answers needed on both sides before a touchpoint of a journey is tested."""
VERDICT_SHARE: Final = 0.95
"""A touchpoint carrying this share of a journey's answers of the alert's metric on both
sides is the journey's own verdict (e.g. a journey-end survey), not one of its steps."""
_SHARES: Final = ("csat", "outcome")

RowKind = Literal["value", "other", "rest"]
Scope = dict[str, str]


# ------------------------------------------------------------------------ numbers


def _num(x: float | None) -> float | None:
    """A float for JSON: None for missing, NaN or infinite."""
    if x is None or not math.isfinite(x):
        return None
    return float(x) + 0.0  # no -0.0 in the output


def _pct(x: float) -> str:
    return f"{100.0 * x:.0f}%"


def _numerators(metric: str, vecs: FloatArray) -> FloatArray:
    """x of ``score = x / n`` for each row: top count, 100 (top - bottom) or sum."""
    if metric in _SHARES:
        out: FloatArray = vecs[:, TOP].copy()
    elif metric == "nps":
        out = 100.0 * (vecs[:, TOP] - vecs[:, BOTTOM])
    else:
        out = vecs[:, SUM].copy()
    return out


def _ratio(x: FloatArray, n: FloatArray) -> FloatArray:
    out: FloatArray = np.divide(x, n, out=np.full_like(x, np.nan), where=n > 0)
    return out


# --------------------------------------------------------------------- attribution


@dataclass(frozen=True, slots=True)
class Contribution:
    """One value's part in a change: its own n, scores and shares, rate and mix effects.

    ``kind`` is ``value`` for one value, ``other`` for the folded long tail (``values``
    of them) and ``rest`` for the part of the parent in none of the values. ``fraction``
    is ``(rate + mix) / total`` (None when the total is 0). ``p``/``q`` test the value's
    own drop (one-sided, as detection does); ``mix_p`` the change of its share (two-sided).
    """

    label: str
    kind: RowKind
    scope: Scope
    values: int
    window_n: int
    baseline_n: int
    window_score: float | None
    baseline_score: float | None
    window_share: float
    baseline_share: float
    rate: float
    mix: float
    fraction: float | None
    statistic: float | None = None
    p: float | None = None
    q: float | None = None
    mix_p: float | None = None

    @property
    def contribution(self) -> float:
        """Rate plus mix effect: this value's part of the total change."""
        return self.rate + self.mix

    @property
    def effect(self) -> Literal["rate", "mix", "rate+mix"]:
        """Which effect carries the contribution (at least 60% of it)."""
        c = self.contribution
        if c == 0.0:
            return "rate+mix"
        r = self.rate / c
        return "rate" if r >= DOMINANT else "mix" if r <= 1.0 - DOMINANT else "rate+mix"

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON-ready data (NaN as None)."""
        return {
            "label": self.label, "kind": self.kind, "scope": dict(self.scope),
            "values": self.values, "window_n": self.window_n, "baseline_n": self.baseline_n,
            "window_score": _num(self.window_score),
            "baseline_score": _num(self.baseline_score),
            "window_share": _num(self.window_share),
            "baseline_share": _num(self.baseline_share),
            "rate": _num(self.rate), "mix": _num(self.mix),
            "contribution": _num(self.contribution), "fraction": _num(self.fraction),
            "effect": self.effect, "statistic": _num(self.statistic), "p": _num(self.p),
            "q": _num(self.q), "mix_p": _num(self.mix_p),
        }


@dataclass(frozen=True, slots=True)
class Attribution:
    """A change of one scope's score split over the values of one or more dimensions.

    ``total`` is window minus baseline (negative for a drop) and equals ``rate + mix``
    and the sum of the contributions' ``rate + mix``, folded rows included. Contributions
    are ranked by |rate + mix|.
    """

    metric: str
    dimensions: tuple[str, ...]
    total: float
    window_score: float | None
    baseline_score: float | None
    window_n: int
    baseline_n: int
    rate: float
    mix: float
    contributions: tuple[Contribution, ...]
    summary: str
    test: str | None = None
    alpha: float = 0.05

    @property
    def lead(self) -> Contribution | None:
        """The value that contributes most to the change (never a folded or rest row)."""
        return next((c for c in self.contributions if c.kind == "value"), None)

    @property
    def lead_fraction(self) -> float:
        """The lead's share of the change; NaN without a lead or a change."""
        lead = self.lead
        return math.nan if lead is None or lead.fraction is None else lead.fraction

    def dominant(self, threshold: float = DOMINANT) -> list[Contribution]:
        """Values that each explain at least ``threshold`` of the change."""
        return [c for c in self.contributions
                if c.kind == "value" and c.fraction is not None and c.fraction >= threshold]

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """As plain JSON-ready data; ``top`` keeps that many rows (plus a rest row)."""
        rows = list(self.contributions)
        if top is not None:
            rows = [c for i, c in enumerate(rows) if i < top or c.kind == "rest"]
        return {
            "metric": self.metric, "dimensions": list(self.dimensions),
            "total": _num(self.total), "window_score": _num(self.window_score),
            "baseline_score": _num(self.baseline_score), "window_n": self.window_n,
            "baseline_n": self.baseline_n, "rate": _num(self.rate), "mix": _num(self.mix),
            "test": self.test, "summary": self.summary,
            "contributions": [c.to_dict() for c in rows],
        }


def attribute(
    metric: str,
    children: Mapping[str, tuple[FloatArray, FloatArray]],
    parent: tuple[FloatArray, FloatArray] | None = None,
    *,
    scopes: Mapping[str, Scope] | None = None,
    dimensions: Sequence[str] = (),
    top: int = TOP_VALUES,
    alpha: float = 0.05,
    rest_label: str = "rest",
) -> Attribution:
    """Split the change of a scope's ``metric`` over its values (midpoint Kitagawa).

    ``children`` maps each value's label to its (window, baseline) aggregate vectors.
    Without ``parent`` the scope is their sum; with it (the parent's (window, baseline)
    vectors) the part of the parent in none of the values becomes a ``rest`` row, so the
    contributions always add up to the parent's own change. The ``top`` values by
    |contribution| are reported one by one, the others folded into "other (k values)".
    """
    labels = list(children)
    if labels:
        wins = np.array([np.asarray(children[k][0], dtype=np.float64) for k in labels])
        bases = np.array([np.asarray(children[k][1], dtype=np.float64) for k in labels])
    else:
        wins = np.zeros((0, NCOLS))
        bases = np.zeros((0, NCOLS))
    kinds: list[RowKind] = ["value"] * len(labels)
    if parent is not None:
        rest_w = np.asarray(parent[0], dtype=np.float64) - wins.sum(axis=0)
        rest_b = np.asarray(parent[1], dtype=np.float64) - bases.sum(axis=0)
        tol = 1e-9 * max(1.0, float(parent[0][N]), float(parent[1][N]))
        if rest_w[N] < -tol or rest_b[N] < -tol:
            raise ValueError("the values hold more answers than their parent")
        if rest_w[N] > tol or rest_b[N] > tol:
            labels.append(rest_label)
            kinds.append("rest")
            rest_w[N], rest_b[N] = max(rest_w[N], 0.0), max(rest_b[N], 0.0)
            wins, bases = np.vstack((wins, rest_w)), np.vstack((bases, rest_b))
    keep = [i for i in range(len(labels)) if wins[i, N] > 0 or bases[i, N] > 0]
    labels = [labels[i] for i in keep]
    kinds = [kinds[i] for i in keep]
    wins, bases = wins[keep], bases[keep]
    scope_of = scopes or {}
    n1, n0 = wins[:, N], bases[:, N]
    big_n1, big_n0 = float(n1.sum()), float(n0.sum())
    if big_n1 <= 0.0 or big_n0 <= 0.0:
        return Attribution(metric, tuple(dimensions), math.nan, None, None, int(big_n1),
                           int(big_n0), math.nan, math.nan, (),
                           "not enough answers on both sides to attribute the change",
                           alpha=alpha)
    x1, x0 = _numerators(metric, wins), _numerators(metric, bases)
    s_win, s_base = float(x1.sum()) / big_n1, float(x0.sum()) / big_n0
    w1, w0 = n1 / big_n1, n0 / big_n0
    own1, own0 = _ratio(x1, n1), _ratio(x0, n0)
    s1 = np.where(n1 > 0, own1, own0)
    s0 = np.where(n0 > 0, own0, s1)
    rate = 0.5 * (w0 + w1) * (s1 - s0)
    mix = (w1 - w0) * (0.5 * (s0 + s1) - 0.5 * (s_base + s_win))
    total = s_win - s_base
    tests = [compare(metric, wins[i], bases[i]) if n1[i] >= 2 and n0[i] >= 2 else None
             for i in range(len(labels))]
    p = [math.nan if t is None else t.p for t in tests]
    q = stats.benjamini_hochberg(p).tolist() if p else []
    mix_z = arcsine_z(n1, big_n1, n0, big_n0)

    def row(i: int) -> Contribution:
        t = tests[i]
        return Contribution(
            labels[i], kinds[i], dict(scope_of.get(labels[i], {})), 1, int(n1[i]), int(n0[i]),
            _num(float(own1[i])), _num(float(own0[i])), float(w1[i]), float(w0[i]),
            float(rate[i]), float(mix[i]), _fraction(float(rate[i] + mix[i]), total),
            None if t is None else _num(t.statistic), None if t is None else _num(t.p),
            _num(q[i]), 2.0 * stats.normal_sf(abs(float(mix_z[i]))))

    order = sorted(range(len(labels)), key=lambda i: (-abs(float(rate[i] + mix[i])), labels[i]))
    shown = [i for i in order if kinds[i] == "value"][:top]
    tail = [i for i in order if kinds[i] == "value" and i not in set(shown)]
    if len(tail) == 1:
        shown, tail = shown + tail, []
    visible = set(shown)
    rows = [row(i) for i in order if i in visible or kinds[i] == "rest"]
    if tail:
        rows.append(_folded(metric, tail, wins, bases, rate, mix, total, big_n1, big_n0))
    rows.sort(key=lambda c: (-abs(c.contribution), c.kind != "value", c.label))
    test = next((t.test for t in tests if t is not None), None)
    att = Attribution(metric, tuple(dimensions), total, s_win, s_base, int(big_n1),
                      int(big_n0), float(rate.sum()), float(mix.sum()), tuple(rows), "",
                      test, alpha)
    return replace(att, summary=summarize(att))


def _fraction(contribution: float, total: float) -> float | None:
    return contribution / total if total != 0.0 and math.isfinite(total) else None


def _folded(metric: str, tail: list[int], wins: FloatArray, bases: FloatArray,
            rate: FloatArray, mix: FloatArray, total: float, big_n1: float,
            big_n0: float) -> Contribution:
    w, b = wins[tail].sum(axis=0), bases[tail].sum(axis=0)
    r, m = float(rate[tail].sum()), float(mix[tail].sum())
    x1 = float(_numerators(metric, w[None, :])[0])
    x0 = float(_numerators(metric, b[None, :])[0])
    t = compare(metric, w, b) if w[N] >= 2 and b[N] >= 2 else None
    return Contribution(
        f"other ({len(tail)} values)", "other", {}, len(tail), int(w[N]), int(b[N]),
        x1 / w[N] if w[N] > 0 else None, x0 / b[N] if b[N] > 0 else None,
        float(w[N]) / big_n1, float(b[N]) / big_n0, r, m, _fraction(r + m, total),
        None if t is None else _num(t.statistic), None if t is None else _num(t.p))


def summarize(att: Attribution) -> str:
    """One line for a page: what explains the drop, and whether rate or mix."""
    total = att.total
    if not math.isfinite(total):
        return "not enough answers on both sides to attribute the change"
    if total >= 0.0:
        return f"no drop to attribute ({att.metric} {total:+.3g})"
    values = [c for c in att.contributions if c.kind == "value"]
    if not values:
        return "no value of the scope to attribute the drop to"
    mix_fraction = att.mix / total
    if mix_fraction >= DOMINANT:
        m = max(values, key=lambda c: (c.mix / total, c.label))
        return (f"mix shift: {m.label} went from {_pct(m.baseline_share)} to "
                f"{_pct(m.window_share)} of answers; the mix explains {_pct(mix_fraction)} "
                "of the drop")
    lead = values[0]
    fraction = lead.fraction if lead.fraction is not None else math.nan
    if fraction >= DOMINANT:
        effect = {"rate": "rate effect", "mix": "mix effect",
                  "rate+mix": "rate and mix effects"}[lead.effect]
        caveat = ""
        if lead.effect != "mix" and not (lead.q is not None and lead.q <= att.alpha):
            caveat = " (its own drop is not significant)"
        others = " (the rest rose)" if fraction > 1.05 else ""
        return f"{lead.label} explains {_pct(fraction)} of the drop{others}; {effect}{caveat}"
    parts = [f"{c.label} {_pct(c.fraction)}" for c in values[:3]
             if c.fraction is not None and c.fraction > 0.0]
    return "no single value explains the drop: " + ", ".join(parts)


# ---------------------------------------------------------------- engine series


def canonical(dims: Iterable[str]) -> tuple[str, ...]:
    """Dimensions in the engine's canonical order (how scopes are keyed)."""
    return tuple(sorted(set(dims), key=DIMENSIONS.index))


class SeriesIndex:
    """Series ids by (scope dimensions, metric), then by scope values."""

    def __init__(self, keys: Sequence[SeriesKey]) -> None:
        self.by: dict[tuple[tuple[str, ...], str], dict[tuple[str, ...], int]] = {}
        for sid, (dims, values, metric) in enumerate(keys):
            self.by.setdefault((dims, metric), {})[values] = sid

    def metrics(self, dims: tuple[str, ...]) -> list[str]:
        """Metrics seen in scope ``dims``."""
        return sorted(m for d, m in self.by if d == dims)

    def within(self, dims: tuple[str, ...], metric: str,
               scope: Mapping[str, str]) -> list[tuple[Scope, int]]:
        """(full scope, series id) of every series of ``dims`` inside ``scope``."""
        found = self.by.get((dims, metric), {})
        where = [(dims.index(d), v) for d, v in scope.items()]
        return [(dict(zip(dims, values, strict=True)), sid) for values, sid in found.items()
                if all(values[i] == v for i, v in where)]


def scope_label(scope: Mapping[str, str]) -> str:
    """``channel=chat, segment=enterprise``; ``overall`` for the empty scope."""
    return ", ".join(f"{k}={v}" for k, v in scope.items()) or "overall"


@dataclass(frozen=True, slots=True)
class JourneyNote:
    """Whether a journey type's drop sits in one touchpoint or between them.

    ``stable`` is True when no touchpoint of the journey type (any metric, enough
    answers) dropped significantly and materially; None when it could not be checked.
    ``channel_bands`` is the journey score by channel count, cumulative since the engine
    started (context only: the engine keeps no windowed bands).
    """

    journey_type: str
    checked: int
    stable: bool | None
    dropped: tuple[str, ...]
    verdict: str | None
    mix_fraction: float | None
    channel_bands: dict[str, dict[str, Any]]
    summary: str

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON-ready data."""
        return {"journey_type": self.journey_type, "checked": self.checked,
                "stable": self.stable, "dropped": list(self.dropped),
                "verdict": self.verdict, "mix_fraction": _num(self.mix_fraction),
                "channel_bands": {k: dict(v) for k, v in self.channel_bands.items()},
                "summary": self.summary}


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything said about one dropped series: the attributions and the line for a page.

    ``by``: one attribution per configured dimension that refines the scope, the most
    telling (largest share explained by one value) first. ``drill``: deeper levels within
    the dominant value. ``lead``: the full scope of the cell the summary names.
    ``dominant``: full scopes of every cell that explains >= ``DOMINANT`` of the drop
    (what alert grouping looks for). ``parent``: the series of the same rule whose alert
    explains this one (set by ``explain_drops``).
    """

    key: SeriesKey
    by: tuple[Attribution, ...]
    drill: tuple[Attribution, ...]
    journey: JourneyNote | None
    summary: str
    lead: Scope | None
    lead_fraction: float | None
    effect: str | None
    dominant: tuple[Scope, ...]
    parent: SeriesKey | None = None

    @property
    def scope(self) -> Scope:
        """The explained series' own scope."""
        return dict(zip(self.key[0], self.key[1], strict=True))

    def to_dict(self, dimensions: int = EVIDENCE_DIMENSIONS,
                top: int = TOP_VALUES) -> dict[str, Any]:
        """As plain JSON-ready data: the top ``dimensions`` decompositions, ``top`` rows."""
        return {
            "summary": self.summary,
            "lead": None if self.lead is None else dict(self.lead),
            "lead_fraction": _num(self.lead_fraction),
            "effect": self.effect,
            "decomposition": "kitagawa_midpoint",
            "dominant": [dict(s) for s in self.dominant],
            "by": [a.to_dict(top) for a in self.by[:dimensions]],
            "drill": [a.to_dict(top) for a in self.drill],
            "journey": None if self.journey is None else self.journey.to_dict(),
        }


def _attribute_cells(metric: str, cells: list[tuple[Scope, int]], window: FloatArray,
                     baseline: FloatArray, base: Scope,
                     parent: tuple[FloatArray, FloatArray] | None, dims: tuple[str, ...],
                     alpha: float, top: int, rest_label: str = "rest") -> Attribution:
    children: dict[str, tuple[FloatArray, FloatArray]] = {}
    scopes: dict[str, Scope] = {}
    for full, sid in cells:
        label = scope_label({k: v for k, v in full.items() if k not in base})
        children[label] = (window[sid], baseline[sid])
        scopes[label] = full
    return attribute(metric, children, parent, scopes=scopes, dimensions=dims, top=top,
                     alpha=alpha, rest_label=rest_label)


def _telling(att: Attribution) -> tuple[float, int]:
    frac = att.lead_fraction
    return (-(frac if math.isfinite(frac) else -math.inf), DIMENSIONS.index(att.dimensions[-1]))


def explain(engine: Engine, key: SeriesKey, window: FloatArray, baseline: FloatArray, *,
            alpha: float = 0.05, index: SeriesIndex | None = None, depth: int = MAX_DEPTH,
            top: int = TOP_VALUES) -> Explanation:
    """Attribute the change of series ``key`` between two dense (series, NCOLS) matrices.

    ``window`` and ``baseline`` hold every series' sums (as ``Granularity.dense`` gives
    them). ``depth`` (at most ``MAX_DEPTH``) bounds the levels below the series' scope.
    """
    index = index if index is not None else SeriesIndex(engine.series.keys)
    dims, values, metric = key
    scope = dict(zip(dims, values, strict=True))
    configured = set(engine.config.scopes)
    sid = engine.series.get(key)
    parent = (window[sid], baseline[sid]) if sid is not None and sid < len(window) else None
    by: list[Attribution] = []
    for d in DIMENSIONS:
        child_dims = canonical((*dims, d))
        if d in dims or child_dims not in configured:
            continue
        cells = index.within(child_dims, metric, scope)
        if cells:
            by.append(_attribute_cells(metric, cells, window, baseline, scope, parent, (d,),
                                       alpha, top))
    by.sort(key=_telling)
    dominant: list[Scope] = [c.scope for a in by for c in a.dominant()]
    drill: list[Attribution] = []
    current = by[0] if by else None
    for _ in range(1, min(depth, MAX_DEPTH)):
        lead = None if current is None else current.lead
        if current is None or lead is None or not current.lead_fraction >= DOMINANT:
            break
        within = lead.scope
        options: list[Attribution] = []
        for d in DIMENSIONS:
            finer = canonical((*within, d))
            if d in within or finer not in configured:
                continue
            cells = index.within(finer, metric, within)
            if cells:
                options.append(_attribute_cells(
                    metric, cells, window, baseline, scope, parent, (*current.dimensions, d),
                    alpha, top, rest_label=f"outside {lead.label}"))
        if not options:
            break
        options.sort(key=_telling)
        current = options[0]
        drill.append(current)
        dominant += [c.scope for c in current.dominant()]
    named = next((a for a in reversed(drill) if a.lead_fraction >= DOMINANT), None)
    headline = named or (by[0] if by else None)
    journey = _journey(engine, index, metric, scope, by, window, baseline, alpha)
    if headline is None:
        summary, lead_scope, frac, effect = _leaf(metric, scope, parent), None, None, None
    else:
        summary = headline.summary
        lead = headline.lead
        lead_scope = None if lead is None else lead.scope
        frac = _num(headline.lead_fraction)
        effect = _effect(headline)
    if journey is not None and journey.stable:
        summary = journey.summary
        effect = "journey"
    unique: list[Scope] = []
    for s in dominant:
        if s not in unique:
            unique.append(s)
    return Explanation(key, tuple(by), tuple(drill), journey, summary, lead_scope, frac,
                       effect, tuple(unique))


def _leaf(metric: str, scope: Scope, vectors: tuple[FloatArray, FloatArray] | None) -> str:
    """The line for a scope no configured scope refines: its own change."""
    line = f"{scope_label(scope)} is as fine as the configured scopes go"
    if vectors is None or vectors[0][N] <= 0 or vectors[1][N] <= 0:
        return line
    w, b = (_numerators(metric, v[None, :])[0] / v[N] for v in vectors)
    return (f"{line}: {metric} {b:.3g} -> {w:.3g} (n {int(vectors[1][N])} -> "
            f"{int(vectors[0][N])})")


def _effect(att: Attribution) -> str | None:
    if not math.isfinite(att.total) or att.total >= 0.0:
        return None
    if att.mix / att.total >= DOMINANT:
        return "mix"
    lead = att.lead
    if lead is None or not att.lead_fraction >= DOMINANT:
        return "spread"
    return lead.effect


def _journey(engine: Engine, index: SeriesIndex, metric: str, scope: Scope,
             by: list[Attribution], window: FloatArray, baseline: FloatArray,
             alpha: float) -> JourneyNote | None:
    """Check the touchpoints of the journey type the drop is in (see the module notes)."""
    base = scope
    if "journey_type" not in scope:
        first = by[0] if by else None
        lead = None if first is None else first.lead
        if (first is None or lead is None or first.dimensions != ("journey_type",)
                or not first.lead_fraction >= DOMINANT):
            return None
        base = lead.scope
    if "touchpoint" in base:
        return None
    journey_type = base["journey_type"]
    bands = engine.journeys.by_channel_count(journey_type)
    tp_dims = canonical((*base, "touchpoint"))
    if tp_dims not in set(engine.config.scopes):
        return JourneyNote(journey_type, 0, None, (), None, None, bands,
                           f"journey {journey_type}: touchpoints not checked (scope "
                           f"{', '.join(tp_dims)} is not configured)")
    series = [(m, full, sid) for m in index.metrics(tp_dims)
              for full, sid in index.within(tp_dims, m, base)]
    own = [(full["touchpoint"], sid) for m, full, sid in series if m == metric]
    verdict = None
    for touchpoint, sid in own:
        shares = [side[sid, N] / max(1.0, sum(side[s, N] for _, s in own))
                  for side in (window, baseline)]
        if min(shares) >= VERDICT_SHARE:
            verdict = touchpoint
    family = [(m, full["touchpoint"], sid) for m, full, sid in series
              if not (m == metric and full["touchpoint"] == verdict)
              and window[sid, N] >= JOURNEY_MIN_N and baseline[sid, N] >= JOURNEY_MIN_N]
    comparisons = [compare(m, window[sid], baseline[sid]) for m, _, sid in family]
    q = stats.benjamini_hochberg([c.p for c in comparisons]).tolist() if family else []
    dropped = tuple(f"{tp} ({m})" for (m, tp, _), c, qi in zip(family, comparisons, q,
                                                               strict=True)
                    if qi <= alpha and c.effect >= default_min_effect(m))
    by_tp = next((a for a in by if a.dimensions == ("touchpoint",)), None)
    mix_fraction = (None if by_tp is None or not by_tp.total < 0.0
                    else _num(by_tp.mix / by_tp.total))
    checked = len(family)
    if checked == 0:
        return JourneyNote(journey_type, 0, None, (), verdict, mix_fraction, bands,
                           f"journey {journey_type}: no touchpoint has enough answers to check")
    if dropped:
        return JourneyNote(journey_type, checked, False, dropped, verdict, mix_fraction, bands,
                           f"journey {journey_type}: touchpoints that dropped: "
                           + ", ".join(dropped))
    summary = (f"journey {journey_type} dropped while every touchpoint in it looks stable "
               f"({checked} checked): hand-offs / channel switching, not one touchpoint")
    if mix_fraction is not None and mix_fraction >= 0.5:
        summary += f"; more answers at weaker touchpoints explain {_pct(mix_fraction)}"
    return JourneyNote(journey_type, checked, True, (), verdict, mix_fraction, bands, summary)


# ---------------------------------------------------------------------- grouping


def _is_inside(inner: Mapping[str, str], outer: Mapping[str, str]) -> bool:
    """Whether scope ``outer`` strictly refines ``inner`` (same values, more dimensions)."""
    return len(outer) > len(inner) and all(outer.get(k) == v for k, v in inner.items())


def explaining_parents(items: Mapping[str, tuple[Scope, Sequence[Scope]]]) -> dict[str, str]:
    """Child id -> parent id, for items ``id -> (scope, dominant cell scopes)``.

    An item is explained by another whose scope it strictly refines and whose dominant
    cells include its scope; the nearest (largest) such scope is its parent.
    """
    out: dict[str, str] = {}
    for child, (scope, _) in items.items():
        found = [(len(s), pid) for pid, (s, cells) in items.items()
                 if pid != child and _is_inside(s, scope) and dict(scope) in list(cells)]
        if found:
            out[child] = max(found, key=lambda f: (f[0], f[1]))[1]
    return out


def explain_drops(engine: Engine, metric: str, keys: Sequence[SeriesKey],
                  window: FloatArray, baseline: FloatArray, *,
                  alpha: float = 0.05) -> dict[SeriesKey, Explanation]:
    """Explain the series of one rule that drop now (the first ``MAX_EXPLAINED`` keys).

    Each explanation's ``parent`` names the series among ``keys`` that explains it.
    """
    index = SeriesIndex(engine.series.keys)
    found = {key: explain(engine, key, window, baseline, alpha=alpha, index=index)
             for key in keys[:MAX_EXPLAINED]}
    names = {key: repr(key) for key in found}
    by_name = {names[k]: k for k in found}
    parents = explaining_parents({names[k]: (e.scope, e.dominant) for k, e in found.items()
                                  if k[2] == metric})
    return {k: replace(e, parent=by_name[parents[names[k]]] if names[k] in parents else None)
            for k, e in found.items()}


@dataclass(slots=True)
class AlertGroup:
    """Alerts of one rule that are one incident: the root pages, members are named."""

    root: Alert
    members: list[Alert] = field(default_factory=list)
    explained_by: dict[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The root's attribution summary, and how many alerts it explains."""
        ev = self.root.evidence
        line = (ev.attribution_summary if ev is not None and ev.attribution_summary
                else f"{self.root.metric} dropped on {scope_label(self.root.scope)}")
        if self.members:
            line += f" (explains {len(self.members)} more alert"
            line += "s)" if len(self.members) > 1 else ")"
        return line

    def to_dict(self) -> dict[str, Any]:
        """As plain data: the root alert id and the members with their parents."""
        return {"root": self.root.id, "rule": self.root.rule,
                "scope": dict(self.root.scope), "summary": self.summary,
                "members": [{"id": a.id, "scope": dict(a.scope),
                             "explained_by": self.explained_by[a.id]} for a in self.members]}


def group_alerts(alerts: Sequence[Alert], mark: bool = True) -> list[AlertGroup]:
    """Group alerts fired together under the alerts that explain them (one page each).

    Alerts of the same rule and metric are grouped by their evidence's attribution
    (``dominant`` cells, see ``explaining_parents``); every alert ends in exactly one
    group, rooted at an alert nobody explains. With ``mark`` each member's evidence gets
    ``explained_by`` (its parent's id), as the detector sets it when both fire together.
    """
    items: dict[str, tuple[Scope, list[Scope]]] = {}
    families: dict[tuple[str, str], list[str]] = {}
    by_id = {a.id: a for a in alerts}
    for a in alerts:
        attribution = a.evidence.attribution if a.evidence is not None else None
        cells = [dict(s) for s in (attribution or {}).get("dominant", [])]
        items[a.id] = (dict(a.scope), cells)
        families.setdefault((a.rule, a.metric), []).append(a.id)
    parents: dict[str, str] = {}
    for ids in families.values():
        parents.update(explaining_parents({i: items[i] for i in ids}))

    def root_of(alert_id: str) -> str:
        while alert_id in parents:
            alert_id = parents[alert_id]
        return alert_id

    groups: dict[str, AlertGroup] = {}
    for a in alerts:
        root = root_of(a.id)
        group = groups.setdefault(root, AlertGroup(by_id[root]))
        if a.id != root:
            group.members.append(a)
            group.explained_by[a.id] = parents[a.id]
            if mark and a.evidence is not None and a.evidence.explained_by != parents[a.id]:
                a.evidence = replace(a.evidence, explained_by=parents[a.id])
    for group in groups.values():
        group.members.sort(key=lambda m: (len(m.scope), m.id))
    return list(groups.values())
