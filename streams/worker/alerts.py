"""Alerts and follow-ups on Kafka: one evaluator, and every reader the same book.

The group leader is the only alert evaluator (``agents.ScoresPublisher``). Each state
change it publishes to the alerts topic carries the alert's whole state
(``AlertChange.record``), so every reader rebuilds the same alert book from the topic:
API replicas serve it, their Prometheus gauges read it, and a new leader loads it before
its first evaluation, so alerts open at a leadership change go on under their ids.

Follow-ups: partition workers publish each new follow-up under its id (compacted topic).
A person's close or assignment is published under ``<id>/status`` as the whole
follow-up after the change. A status record wins over the worker's record in whatever
order they are read, so a worker that republishes a batch after a crash cannot re-open a
closed follow-up.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from streams.detection import Alert, DetectionConfig, Detector, FollowUp
from streams.worker.reader import TopicFollower, read_compacted
from streams.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

STATUS_SUFFIX = b"/status"
"""Key suffix of a follow-up's status record (closed or assigned by a person)."""


def status_key(followup_id: str) -> bytes:
    """The follow-ups topic key of a follow-up's status record."""
    return followup_id.encode() + STATUS_SUFFIX


class DetectorMirror:
    """A ``Detector`` whose books are filled from the alerts and follow-ups topics."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self._status: dict[str, FollowUp] = {}
        self.ignored = 0

    def apply_alert(self, value: bytes | None) -> None:
        """One alerts-topic record (an ``AlertChange.record``)."""
        if value is None:
            return
        try:
            alert = Alert.from_state(orjson.loads(value)["book"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self._ignore("alert", value, exc)
            return
        if self.detector.alerts.mirror(alert):
            self.detector.changes[alert.state] += 1

    def apply_followup(self, key: bytes, value: bytes | None) -> None:
        """One follow-ups-topic record: a worker's follow-up or a status record."""
        if value is None:
            return
        try:
            item = FollowUp.from_dict(orjson.loads(value))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self._ignore("follow-up", value, exc)
            return
        if key.endswith(STATUS_SUFFIX):
            self._status[item.id] = item
        elif item.id in self._status:
            return  # a person's close or assignment stands
        self.detector.followups.mirror(item)

    def _ignore(self, what: str, value: bytes, exc: Exception) -> None:
        log.warning("ignoring an unreadable %s record (%s): %r", what, exc, value[:80])
        self.ignored += 1


class DetectorReader(TopicFollower):
    """Follows the alerts and follow-ups topics into a mirrored ``Detector``."""

    def __init__(self, settings: WorkerSettings, detection: DetectionConfig) -> None:
        super().__init__(settings.bootstrap_servers,
                         [settings.topic_alerts, settings.topic_followups],
                         client_id=f"{settings.app_id}-alerts-reader")
        self.alerts_topic = settings.topic_alerts
        self.mirror = DetectorMirror(Detector(detection))

    @property
    def detector(self) -> Detector:
        """The mirrored detector (read-only: it is never evaluated here)."""
        return self.mirror.detector

    def _apply(self, topic: str, key: bytes, value: bytes | None) -> None:
        if topic == self.alerts_topic:
            self.mirror.apply_alert(value)
        else:
            self.mirror.apply_followup(key, value)


async def load_alerts(settings: WorkerSettings, detector: Detector) -> int:
    """Fill ``detector``'s alert book from the alerts topic (a new leader, before its
    first evaluation); returns how many alerts it holds. The latest record of each alert
    is its whole state, so they are applied oldest change first."""
    latest = await read_compacted(settings.bootstrap_servers, settings.topic_alerts)
    states: list[dict[str, Any]] = []
    for value in latest.values():
        try:
            states.append(orjson.loads(value)["book"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring an unreadable alert record %r", value[:80])
    mirror = DetectorMirror(detector)
    for state in sorted(states, key=lambda s: (s["updated_at"], s["id"])):
        mirror.apply_alert(orjson.dumps({"book": state}))
    return len(states)
