"""Customers measured against themselves: a personal baseline, a trend, an at-risk flag.

Each customer keeps the last ``recent`` satisfaction values (0..1) and running
moments of everything older (their history). A customer is at risk when the recent
mean sits below the history mean by at least ``min_drop`` *and* by more than ``z``
standard errors, with enough answers on both sides: one bad day of an always-grumpy
customer is normal for them; a sudden fall of a happy one is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from streams.engine.config import CustomerConfig

_VARIANCE_FLOOR = 0.01  # (0.1 on a 0..1 scale)^2: no certainty from a handful of equal answers


@dataclass(slots=True)
class Customer:
    """One customer's running state; fixed size."""

    customer_id: str
    segment: str
    recent: list[float] = field(default_factory=list)
    history_n: int = 0
    history_mean: float = 0.0
    history_m2: float = 0.0
    signals: int = 0
    last_seen: int = 0

    def add(self, value: float, at: int, keep: int) -> None:
        """Add one satisfaction value; the oldest recent value moves into history."""
        self.signals += 1
        self.last_seen = max(self.last_seen, at)
        self.recent.append(value)
        if len(self.recent) > keep:
            old = self.recent.pop(0)
            self.history_n += 1
            delta = old - self.history_mean
            self.history_mean += delta / self.history_n
            self.history_m2 += delta * (old - self.history_mean)

    def assess(self, cfg: CustomerConfig) -> dict[str, Any]:
        """Baseline, trend and at-risk flag, with the numbers behind them."""
        recent_n = len(self.recent)
        recent_mean = sum(self.recent) / recent_n if recent_n else None
        baseline = self.history_mean if self.history_n else None
        trend = None
        at_risk = False
        if recent_mean is not None and baseline is not None:
            trend = recent_mean - baseline
            if recent_n >= cfg.min_recent and self.history_n >= cfg.min_history:
                var = max(self.history_m2 / (self.history_n - 1), _VARIANCE_FLOOR)
                se = math.sqrt(var / self.history_n + var / recent_n)
                at_risk = -trend >= cfg.min_drop and -trend > cfg.z * se
        return {
            "customer_id": self.customer_id,
            "segment": self.segment,
            "signals": self.signals,
            "last_seen": self.last_seen,
            "baseline": None if baseline is None else 100 * baseline,
            "baseline_n": self.history_n,
            "recent": None if recent_mean is None else 100 * recent_mean,
            "recent_n": recent_n,
            "trend": None if trend is None else 100 * trend,
            "at_risk": at_risk,
        }


class CustomerBook:
    """Every customer seen, keyed by the pseudonymous ``customer_id``."""

    def __init__(self, cfg: CustomerConfig) -> None:
        self.cfg = cfg
        self.customers: dict[str, Customer] = {}

    def add(self, customer_id: str, segment: str, value: float, at: int) -> None:
        """Record one signal; values that are not a satisfaction (NaN) only touch last-seen."""
        customer = self.customers.get(customer_id)
        if customer is None:
            customer = self.customers[customer_id] = Customer(customer_id, segment)
        customer.segment = segment
        if math.isnan(value):
            customer.last_seen = max(customer.last_seen, at)
            return
        customer.add(value, at, self.cfg.recent)

    def get(self, customer_id: str) -> dict[str, Any] | None:
        """A customer's assessment, or None when never seen."""
        customer = self.customers.get(customer_id)
        return None if customer is None else customer.assess(self.cfg)

    def at_risk(self) -> list[str]:
        """Ids of customers flagged at risk now."""
        return [c.customer_id for c in self.customers.values()
                if c.assess(self.cfg)["at_risk"]]

    def state(self) -> list[list[Any]]:
        """Snapshot."""
        return [[c.customer_id, c.segment, c.recent, c.history_n, c.history_mean,
                 c.history_m2, c.signals, c.last_seen] for c in self.customers.values()]

    def restore(self, state: list[list[Any]]) -> None:
        """Restore a snapshot taken by ``state``."""
        self.customers = {
            row[0]: Customer(row[0], row[1], list(row[2]), row[3], row[4], row[5], row[6],
                             row[7])
            for row in state
        }
