"""The worker's topics: their layout from settings, created when missing, checked when not.

- ``touchpoints`` (``topic_partitions``, delete): input events, keyed by customer id,
  kept ``touchpoints_retention_ms`` (raw events, comments as producers sent them);
- ``touchpoints.dlq`` (``dlq_partitions``, delete): rejected and late events, original
  bytes (scrubbed under the comment policy), reason in headers; kept ``dlq_retention_ms``
  and at most about ``dlq_retention_bytes`` in all, the oldest going first;
- ``touchstream.scores`` (``scores_partitions``, compact): latest score per window,
  scope value and metric;
- ``touchstream.alerts`` (``alerts_partitions``, delete): alert state changes (filled by
  the alerting issue);
- ``<app_id>-partials`` (``topic_partitions``, compact): internal, partial aggregates
  per source partition and bucket;
- ``<app_id>-checkpoints-changelog`` (``topic_partitions``, compact): internal, the Faust
  table of per-partition checkpoints;
- ``<app_id>-erasures`` (1 partition, delete, kept forever): the erasure audit trail, one
  record per erasure asked and one when it is done (digest, by, at, state, removed;
  never the customer's id).

An existing topic with a layout the worker cannot work with is an error that says what
to do: state is kept per input partition, so the input, partials and changelog topics
must have exactly ``topic_partitions`` partitions; compacted topics must compact and
must not delete (that would drop latest values); the input must not compact (that
would drop events). The retention of topics that delete (``retention.ms``,
``retention.bytes``, ``segment.bytes``) is set to the settings' on existing topics too
(with ``create_topics``; else logged), so a shorter retention configured later applies.
Other differences (replication) are left as they are.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

Cleanup = Literal["delete", "compact"]


class TopicLayoutError(RuntimeError):
    """A topic exists with a layout the worker cannot use."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """What one topic must look like."""

    name: str
    partitions: int
    cleanup: Cleanup
    role: str
    strict_partitions: bool
    config: dict[str, str] = field(default_factory=dict)

    def new_topic(self, replication: int) -> NewTopic:
        """The kafka-python creation request."""
        return NewTopic(self.name, self.partitions, replication,
                        topic_configs={"cleanup.policy": self.cleanup, **self.config})


MIN_SEGMENT_BYTES = 1 << 20
"""The smallest ``segment.bytes`` the worker gives the dead-letter topic (Kafka 4's
floor)."""


def dlq_size_config(total: int, partitions: int) -> dict[str, str]:
    """``retention.bytes`` and ``segment.bytes`` of the dead-letter topic that keep its
    total size near ``total`` bytes (-1: unbounded, nothing set).

    Kafka bounds each partition, not the topic, and deletes whole closed segments, the
    oldest first; the open segment is never deleted. So each partition gets an equal
    share of ``total``, split into an eighth for its segments (at least 1 MiB) and the
    rest for ``retention.bytes``: closed segments beyond ``retention.bytes`` go, and a
    partition holds about its share (plus what arrives between two of the broker's
    retention checks, ``log.retention.check.interval.ms``, 5 minutes by default)."""
    if total < 0:
        return {}
    share = max(total // partitions, 2 * MIN_SEGMENT_BYTES)
    segment = max(share // 8, MIN_SEGMENT_BYTES)
    return {"retention.bytes": str(share - segment), "segment.bytes": str(segment)}


def erasures_topic(settings: WorkerSettings) -> str:
    """The erasure audit trail's topic (``streams.runner.ErasureReport.to_dict`` records,
    keyed by the digest), written by the API's ``KafkaRunner.erase_customer``."""
    return f"{settings.app_id}-erasures"


def topic_specs(settings: WorkerSettings) -> list[TopicSpec]:
    """Every topic the worker reads or writes."""
    n = settings.topic_partitions
    compacted = {"min.cleanable.dirty.ratio": "0.1", "segment.ms": str(3_600_000)}
    return [
        TopicSpec(settings.topic_touchpoints, n, "delete", "input events", True,
                  {"retention.ms": str(settings.touchpoints_retention_ms)}),
        TopicSpec(settings.topic_dlq, settings.dead_letter_partitions, "delete",
                  "dead letters", False, {"retention.ms": str(settings.dlq_retention_ms),
                                          **dlq_size_config(settings.dlq_retention_bytes,
                                                            settings.dead_letter_partitions)}),
        TopicSpec(settings.topic_scores, settings.scores_partitions, "compact", "scores",
                  True, dict(compacted)),
        TopicSpec(settings.topic_alerts, settings.alerts_partitions, "delete", "alerts",
                  False, {"retention.ms": str(settings.alerts_retention_ms)}),
        TopicSpec(settings.topic_followups, settings.alerts_partitions, "compact",
                  "follow-ups", False, dict(compacted)),
        TopicSpec(settings.partials_topic, n, "compact", "partial aggregates (internal)",
                  True, dict(compacted)),
        TopicSpec(settings.checkpoint_changelog, n, "compact",
                  "checkpoint changelog (internal)", True, dict(compacted)),
        TopicSpec(erasures_topic(settings), 1, "delete", "erasure audit trail", False,
                  {"retention.ms": "-1"}),
    ]


def ensure_topics(settings: WorkerSettings, *, timeout: float = 30.0) -> list[str]:
    """Create missing topics (if ``create_topics``) and check existing ones.

    Returns the names created. Raises ``TopicLayoutError`` naming every problem found.
    """
    specs = topic_specs(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                             client_id=f"{settings.app_id}-admin",
                             request_timeout_ms=int(timeout * 1000))
    try:
        existing = _describe(admin, [s.name for s in specs])
        missing = [s for s in specs if s.name not in existing]
        problems: list[str] = []
        if missing and not settings.create_topics:
            problems += [f"topic {s.name!r} ({s.role}) does not exist and "
                         "TOUCHSTREAM_CREATE_TOPICS is off" for s in missing]
        created: list[str] = []
        if missing and settings.create_topics:
            for spec in missing:
                try:
                    admin.create_topics([spec.new_topic(settings.topic_replication)],
                                        timeout_ms=int(timeout * 1000))
                    created.append(spec.name)
                    log.info("created topic %s: %d partitions, %s (%s)", spec.name,
                             spec.partitions, spec.cleanup, spec.role)
                except TopicAlreadyExistsError:
                    pass  # another worker created it meanwhile; checked below
            existing = _wait_described(admin, [s.name for s in specs], timeout)
        configs = _configs(admin, [s.name for s in specs if s.name in existing])
        for spec in specs:
            if spec.name in existing:
                problems += _check(spec, existing[spec.name], configs.get(spec.name, {}),
                                   settings)
        drifts = {spec.name: drift for spec in specs if spec.name in existing
                  if (drift := retention_drift(spec, configs.get(spec.name, {})))}
        if problems:
            raise TopicLayoutError(
                "Kafka topics do not fit this worker's settings:\n  - "
                + "\n  - ".join(problems)
                + "\nFix the settings (TOUCHSTREAM_TOPIC_*) or the topics; a topic's "
                  "partition count cannot shrink, and changing it for the input means "
                  "re-partitioning the state (new app id and fresh internal topics).")
        _apply_retention(admin, settings, drifts, configs)
        return created
    finally:
        admin.close()


def _describe(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Existing topics among ``names`` and their partition counts."""
    out: dict[str, int] = {}
    for desc in admin.describe_topics(names):
        if desc.get("error_code", 0) == 0 and desc.get("partitions"):
            out[str(desc["name"])] = len(desc["partitions"])
    return out


def _wait_described(admin: KafkaAdminClient, names: list[str],
                    timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        found = _describe(admin, names)
        if len(found) == len(names) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _configs(admin: KafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    result: Any = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n) for n in names], config_filter="all")
    topics = result.get("topic", {}) if isinstance(result, dict) else {}
    return {name: {k: str(v.get("value")) for k, v in entries.items()}
            for name, entries in topics.items()}


def _check(spec: TopicSpec, partitions: int, config: dict[str, str],
           settings: WorkerSettings) -> list[str]:
    problems: list[str] = []
    if partitions != spec.partitions:
        message = (f"topic {spec.name!r} ({spec.role}) has {partitions} partitions, "
                   f"settings say {spec.partitions}")
        if spec.strict_partitions:
            problems.append(message)
        else:
            log.warning("%s; using it as it is", message)
    policy = {p.strip() for p in config.get("cleanup.policy", "delete").split(",")}
    if spec.cleanup == "compact" and policy != {"compact"}:
        problems.append(f"topic {spec.name!r} ({spec.role}) must be compacted "
                        f"(cleanup.policy=compact), it has {','.join(sorted(policy))}")
    if spec.cleanup == "delete" and "compact" in policy:
        problems.append(f"topic {spec.name!r} ({spec.role}) must not be compacted "
                        f"(compaction would drop records), it has "
                        f"cleanup.policy={','.join(sorted(policy))}")
    return problems


RETENTION_KEYS = ("retention.ms", "retention.bytes", "segment.bytes")
"""What bounds a topic that deletes: the worker keeps these as its settings say."""


def retention_drift(spec: TopicSpec, config: dict[str, str]) -> dict[str, str]:
    """The retention settings of a topic that deletes which its broker configuration
    (``config``) does not have: key to the value the settings give."""
    if spec.cleanup != "delete":
        return {}
    return {key: wanted for key in RETENTION_KEYS
            if (wanted := spec.config.get(key)) is not None and config.get(key) != wanted}


def _apply_retention(admin: KafkaAdminClient, settings: WorkerSettings,
                     drifts: dict[str, dict[str, str]],
                     configs: dict[str, dict[str, str]]) -> None:
    """Bring existing topics' retention to the settings (incrementally: other keys stay
    as they are), so that a shorter retention configured later applies to the topics
    already there; without ``create_topics`` (someone else manages the topics) only say
    what differs. A refusal (an ACL) is logged: it does not stop the worker."""
    for name, drift in drifts.items():
        was = {key: configs.get(name, {}).get(key) for key in drift}
        if not settings.create_topics:
            log.warning("topic %s has %s, settings say %s (TOUCHSTREAM_CREATE_TOPICS is off: "
                        "left as it is)", name, was, drift)
            continue
        try:
            result = admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, configs=dict(drift))])
            errors = [r for r in _results(result) if getattr(r, "errno", 0)]
            if errors:
                raise RuntimeError(", ".join(map(str, errors)))
        except Exception as exc:  # noqa: BLE001 - the broker may refuse: say so, go on
            log.warning("topic %s: could not set %s (it has %s): %s", name, drift, was, exc)
            continue
        log.info("topic %s: retention set to %s (was %s)", name, drift, was)


def _results(result: Any) -> list[Any]:
    """The per-resource outcomes in ``alter_configs``'s answer, whatever its shape."""
    if isinstance(result, dict):
        return [outcome for by_name in result.values()
                for outcome in (by_name.values() if isinstance(by_name, dict) else [by_name])]
    return []


def faust_topic(app: Any, name: str, partitions: int) -> Any:
    """A raw-bytes Faust topic (the worker decodes values itself, in batches)."""
    return app.topic(name, key_serializer="raw", value_serializer="raw",
                     partitions=partitions, internal=False)
