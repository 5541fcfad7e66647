"""Worker settings: one frozen object read from ``TOUCHSTREAM_*`` environment variables
and the TOML file named by ``TOUCHSTREAM_CONFIG``, the API's file too (``streams.settings``).

Every topic name, partition count and retention is a setting, so several deployments
(or test runs) can share one Kafka cluster without seeing each other's data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from streams.settings import TouchstreamSettings

_DAY_MS = 86_400_000


class WorkerSettings(TouchstreamSettings):
    """Everything a ``touchstream worker`` reads from its environment and the shared TOML
    file (``engine_config``, ``detection_config`` and their loaders come from the base).

    The input topic, the partials topic and the checkpoint changelog always have
    ``topic_partitions`` partitions: state is kept per input partition.
    """

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list of brokers."""
    app_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")] = (
        "touchstream"
    )
    """Faust app id: the consumer group and the prefix of internal topics."""

    topic_touchpoints: str = "touchpoints"
    topic_dlq: str = "touchpoints.dlq"
    topic_scores: str = "touchstream.scores"
    topic_alerts: str = "touchstream.alerts"
    topic_followups: str = "touchstream.followups"
    """Follow-ups (single answers that need a human), compacted, keyed by follow-up id."""
    topic_partials: str | None = None
    """Internal compacted topic of partial aggregates; default ``<app_id>-partials``."""

    topic_partitions: Annotated[int, Field(ge=1, le=10_000)] = 6
    dlq_partitions: Annotated[int, Field(ge=1, le=10_000)] | None = None
    scores_partitions: Annotated[int, Field(ge=1, le=10_000)] = 3
    alerts_partitions: Annotated[int, Field(ge=1, le=10_000)] = 1
    topic_replication: Annotated[int, Field(ge=1, le=10)] = 1
    dead_letter_max_bytes: Annotated[int, Field(ge=0, le=64 * 1024 * 1024)] = 64 * 1024
    """Most payload bytes ``GET /v1/dead-letters`` shows of a dead letter (with the size
    and SHA-256 of all of it); the dead-letter topic keeps the whole original record."""
    alerts_retention_ms: Annotated[int, Field(ge=-1)] = 30 * _DAY_MS
    create_topics: bool = True
    """Create missing topics at start-up (existing ones are always checked)."""

    state_dir: Path = Path("data/worker")
    store: str = "rocksdb://"
    """Faust table store: ``rocksdb://`` (production) or ``memory://`` (tests)."""
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    standby_replicas: Annotated[int, Field(ge=0, le=10)] = 1

    batch_max: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    """Most records taken from Kafka in one batch."""
    fetch_partition_bytes: Annotated[int, Field(ge=65_536, le=64 * 1024 * 1024)] = 4 << 20
    """Most bytes fetched from one input partition per request (Faust's default is
    1 MiB): a worker catching up waits for the broker once per fetch, and processes
    fewer, larger batches (~3-10% more events/s measured at 4 MiB)."""
    flush_interval: Annotated[float, Field(gt=0)] = 0.5
    """Seconds between publications of a partition's changed partial aggregates: the
    floor of produce-to-API latency (an event waits up to this long to be published)."""
    checkpoint_interval: Annotated[float, Field(gt=0)] = 10.0
    """Seconds between checkpoints of a partition's state (with the offset it reflects)."""
    checkpoint_events: Annotated[int, Field(ge=1)] = 200_000
    """Events after which a partition is checkpointed even before ``checkpoint_interval``."""
    checkpoint_chunk_bytes: Annotated[int, Field(ge=1024, le=8_000_000)] = 512 * 1024
    scores_interval: Annotated[float, Field(gt=0)] = 10.0
    """Seconds between publications of merged scores to the scores topic (by the group
    leader). The API reads the partials, not this topic; a round is CPU on the
    leader's loop (every 2 s it cost ~15% of one worker's throughput)."""
    commit_timeout: Annotated[float, Field(gt=0)] = 10.0
    session_timeout: Annotated[float, Field(ge=6, le=300)] = 30.0
    """Seconds without heartbeats before the group gives a worker's partitions away."""
    rebalance_timeout: Annotated[float, Field(ge=1, le=600)] = 60.0
    """Seconds the group waits for members to rejoin during a rebalance."""
    group_instance_id: str | None = None
    """Static group membership (e.g. the pod name): a restart within the session
    timeout gets its partitions back without a rebalance."""

    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Serve the worker's Prometheus metrics (``/metrics``) on this port; off unless set."""
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    """Address the metrics server listens on."""
    web_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Faust's own web server (``/``, stats); off unless a port is given."""
    log_level: Literal["debug", "info", "warn", "error", "crit"] = "info"

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.replace(";", ",").split(",") if s.strip()]
        if not servers:
            raise ValueError("give at least one host:port")
        return ",".join(s.removeprefix("kafka://") for s in servers)

    @model_validator(mode="after")
    def _distinct_topics(self) -> WorkerSettings:
        names = [self.topic_touchpoints, self.topic_dlq, self.topic_scores, self.topic_alerts,
                 self.topic_followups, self.partials_topic, self.checkpoint_changelog]
        if len(set(names)) != len(names):
            raise ValueError(f"topic names must differ: {names}")
        if self.checkpoint_interval < self.flush_interval:
            raise ValueError("checkpoint_interval must be at least flush_interval")
        return self

    @property
    def bootstrap_servers(self) -> list[str]:
        """The brokers as a list, for kafka-python and aiokafka."""
        return self.kafka_bootstrap.split(",")

    @property
    def broker_url(self) -> str:
        """The brokers as a Faust URL."""
        return ";".join(f"kafka://{s}" for s in self.bootstrap_servers)

    @property
    def partials_topic(self) -> str:
        """The compacted topic of partial aggregates."""
        return self.topic_partials or f"{self.app_id}-partials"

    @property
    def checkpoint_table(self) -> str:
        """The Faust table holding per-partition checkpoints."""
        return "checkpoints"

    @property
    def checkpoint_changelog(self) -> str:
        """The changelog topic Faust names after the app and the table."""
        return f"{self.app_id}-{self.checkpoint_table}-changelog"

    @property
    def dead_letter_partitions(self) -> int:
        """Partitions of the dead-letter topic (default: as many as the input)."""
        return self.dlq_partitions or self.topic_partitions
