"""Alerts and their book: one alert per (rule, series), its state changes, stable ids.

Lifecycle, per (rule, series): condition true -> ``pending`` (started_at); still true
``hold_seconds`` later -> ``firing``; false for ``clear_seconds`` while firing ->
``resolved``. A pending alert whose condition goes false never paged anybody: it is
resolved at once (``firing_at`` stays None), so every alert a consumer saw open is seen
to close. A series that cannot be tested (too few answers) counts as "condition false".
Alerts of a rule removed from the configuration are resolved at the next evaluation.
"""

from __future__ import annotations

import builtins
import hashlib
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any, Final, Literal

from streams.detection.rules import AlertRule
from streams.detection.significance import Evidence, iso
from streams.engine.dimensions import NONE, OTHER
from streams.engine.store import SeriesKey

AlertState = Literal["pending", "firing", "resolved"]
_NO_OWNER: Final = frozenset({OTHER, NONE, "unassigned"})


@dataclass(slots=True)
class Alert:
    """One alert of one rule on one series; times are event-time epoch seconds."""

    id: str
    rule: str
    kind: str
    metric: str
    scope: dict[str, str]
    owner: str
    severity: str
    state: AlertState
    started_at: int
    updated_at: int
    firing_at: int | None = None
    resolved_at: int | None = None
    clear_since: int | None = None
    evidence: Evidence | None = None

    def to_dict(self) -> dict[str, Any]:
        """As plain data with ISO 8601 UTC times (for the API and the alerts topic)."""
        return {
            "id": self.id, "rule": self.rule, "kind": self.kind, "metric": self.metric,
            "scope": dict(self.scope), "owner": self.owner, "severity": self.severity,
            "state": self.state, "started_at": iso(self.started_at),
            "firing_at": iso(self.firing_at), "resolved_at": iso(self.resolved_at),
            "updated_at": iso(self.updated_at),
            "evidence": None if self.evidence is None else self.evidence.to_dict(),
            "attribution_summary": None if self.evidence is None
            else self.evidence.attribution_summary,
            "explained_by": None if self.evidence is None else self.evidence.explained_by,
        }

    def state_dict(self) -> dict[str, Any]:
        """Snapshot as plain (msgpack-able) data."""
        out = asdict(self)
        out["evidence"] = None if self.evidence is None else asdict(self.evidence)
        return out

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Alert:
        """Restore a snapshot taken by ``state_dict``."""
        data = dict(s)
        ev = data.pop("evidence")
        return cls(**data, evidence=None if ev is None else Evidence(**ev))


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One state change of one alert: an event for ``touchstream.alerts``."""

    alert: Alert
    previous: AlertState | None
    state: AlertState
    at: int

    def to_dict(self) -> dict[str, Any]:
        """The change as a topic event: the alert after the change, plus what it was."""
        return {**self.alert.to_dict(), "previous": self.previous, "changed_at": iso(self.at)}

    def record(self) -> dict[str, Any]:
        """The change for the alerts topic: ``to_dict`` plus the alert's whole state
        (``book``), so that readers and a new evaluator rebuild the same alert book."""
        return {**self.to_dict(), "book": self.alert.state_dict()}


def alert_id(rule: str, scope: dict[str, str], metric: str, started_at: int) -> str:
    """A stable id: the same alert gets the same id in a replay."""
    label = ",".join(f"{k}={v}" for k, v in scope.items())
    raw = f"{rule}\x1f{label}\x1f{metric}\x1f{started_at}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _scope_owner(rule: AlertRule, scope: dict[str, str]) -> str:
    value = scope.get("owner")
    return rule.owner if value is None or value in _NO_OWNER else value


Outcome = tuple[bool, Evidence | None]
"""Whether a rule's condition holds for a series now, and the evidence seen."""


def book_key_of(rule: str, key: SeriesKey) -> str:
    """Where the alert of ``rule`` on series ``key`` is kept in an ``AlertBook``."""
    dims, values, metric = key
    return "\x1f".join((rule, metric, *(f"{d}={v}" for d, v in zip(dims, values, strict=True))))


def book_key(alert: Alert) -> str:
    """Where ``alert`` is kept in an ``AlertBook``: its rule and series."""
    return book_key_of(alert.rule, (tuple(alert.scope), tuple(alert.scope.values()), alert.metric))


class AlertBook:
    """Active alerts by (rule, series), and a bounded list of recently resolved ones."""

    def __init__(self, recent: int = 1000) -> None:
        self.recent_kept = recent
        self.active: dict[str, Alert] = {}
        self.recent: deque[Alert] = deque()
        self._by_id: dict[str, Alert] = {}

    def get(self, alert_id: str) -> Alert | None:
        """An active or recent alert by id."""
        return self._by_id.get(alert_id)

    def list(self, state: AlertState | None = None, owner: str | None = None,
             severity: str | None = None, rule: str | None = None) -> builtins.list[Alert]:
        """Active alerts (newest first), then recently resolved ones (newest first)."""
        found = sorted(self.active.values(), key=lambda a: (-a.started_at, a.id))
        found += reversed(self.recent)
        return [a for a in found
                if (state is None or a.state == state) and (owner is None or a.owner == owner)
                and (severity is None or a.severity == severity)
                and (rule is None or a.rule == rule)]

    def update(self, rule: AlertRule, kind: str, now: int,
               outcomes: dict[SeriesKey, Outcome]) -> builtins.list[AlertChange]:
        """Advance every alert of ``rule`` (and open new ones) from this evaluation."""
        seen = {book_key_of(rule.name, k): (k, o) for k, o in outcomes.items()}
        ours = {k for k, a in self.active.items() if a.rule == rule.name}
        changes: builtins.list[AlertChange] = []
        for skey in sorted(seen.keys() | ours):
            alert = self.active.get(skey)
            if alert is None:
                key, (holds, evidence) = seen[skey]
                if holds:
                    changes += self._open(rule, kind, key, now, evidence, skey)
                continue
            holds, evidence = seen[skey][1] if skey in seen else (False, None)
            changes += self._advance(alert, rule, now, holds, evidence, skey)
        return changes

    def _open(self, rule: AlertRule, kind: str, key: SeriesKey, now: int,
              evidence: Evidence | None, skey: str) -> builtins.list[AlertChange]:
        dims, values, metric = key
        scope = dict(zip(dims, values, strict=True))
        alert = Alert(alert_id(rule.name, scope, metric, now), rule.name, kind, metric, scope,
                      _scope_owner(rule, scope), rule.severity, "pending", now, now,
                      evidence=evidence)
        self.active[skey] = alert
        self._by_id[alert.id] = alert
        changes = [_change(alert, None, now)]
        return changes + self._advance(alert, rule, now, True, evidence, skey)

    def _advance(self, alert: Alert, rule: AlertRule, now: int, holds: bool,
                 evidence: Evidence | None, skey: str) -> builtins.list[AlertChange]:
        if evidence is not None:
            alert.evidence = evidence
        alert.updated_at = now
        if holds:
            alert.clear_since = None
            if alert.state == "pending" and now - alert.started_at >= rule.hold_seconds:
                alert.state, alert.firing_at = "firing", now
                return [_change(alert, "pending", now)]
            return []
        if alert.state == "firing":
            if alert.clear_since is None:
                alert.clear_since = now
            if now - alert.clear_since < rule.clear_seconds:
                return []
        return [self._resolve(alert, now, skey)]

    def _resolve(self, alert: Alert, now: int, skey: str) -> AlertChange:
        previous = alert.state
        alert.state, alert.resolved_at, alert.updated_at = "resolved", now, now
        del self.active[skey]
        self._remember(alert)
        return _change(alert, previous, now)

    def _remember(self, alert: Alert) -> None:
        self.recent.append(alert)
        while len(self.recent) > self.recent_kept:
            old = self.recent.popleft()
            self._by_id.pop(old.id, None)

    def mirror(self, alert: Alert) -> bool:
        """Take ``alert`` as the evaluator published it (the alerts topic, in order);
        whether the book changed. Resolved is final: a later copy of a resolved alert
        (a replayed publication) changes nothing."""
        known = self._by_id.get(alert.id)
        if known is not None and known.state == "resolved":
            return False
        key = book_key(alert)
        if alert.state == "resolved":
            current = self.active.get(key)
            if current is not None and current.id == alert.id:
                del self.active[key]
            self._by_id[alert.id] = alert
            self._remember(alert)
        else:
            self.active[key] = alert
            self._by_id[alert.id] = alert
        return True

    def retire(self, keep: set[str], now: int) -> builtins.list[AlertChange]:
        """Resolve the active alerts of rules no longer configured."""
        gone = [(k, a) for k, a in sorted(self.active.items()) if a.rule not in keep]
        return [self._resolve(a, now, k) for k, a in gone]

    def state(self) -> dict[str, Any]:
        """Snapshot as plain (msgpack-able) data."""
        return {"active": [[k, a.state_dict()] for k, a in self.active.items()],
                "recent": [a.state_dict() for a in self.recent]}

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the contents with a snapshot taken by ``state`` (trimmed to this bound)."""
        self.active = {k: Alert.from_state(a) for k, a in state["active"]}
        recent = state["recent"][-self.recent_kept:] if self.recent_kept else []
        self.recent = deque(Alert.from_state(a) for a in recent)
        self._by_id = {a.id: a for a in (*self.active.values(), *self.recent)}


def _change(alert: Alert, previous: AlertState | None, now: int) -> AlertChange:
    return AlertChange(replace(alert, scope=dict(alert.scope)), previous, alert.state, now)
