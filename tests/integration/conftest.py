"""Fixtures for tests against real external components: one Kafka broker per session.

The broker (deploy/kafka/broker.py) runs from Maven Central jars, so it needs `java` and
`mvn`. Without them the Kafka tests are skipped locally but fail in CI (CI=true), where a
skip would hide that nothing was tested.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import pytest
from kafka.admin import KafkaAdminClient

from deploy.kafka.broker import KafkaBroker, java_missing

INTEGRATION_DIR = Path(__file__).resolve().parent


class TopicFactory(Protocol):
    """Creates a uniquely named topic and returns its name."""

    def __call__(
        self,
        partitions: int = 1,
        *,
        prefix: str = "test",
        config: Mapping[str, str] | None = None,
    ) -> str: ...


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration with `integration`."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running single-node Kafka broker, started once for the whole session."""
    reason = java_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    broker = KafkaBroker(data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        broker.start(timeout=120)
    except RuntimeError as exc:  # also Maven failures while resolving the jars
        broker.stop()
        pytest.fail(f"Kafka broker did not start: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """`host:port` of the session's broker, for bootstrap_servers."""
    return kafka_broker.bootstrap


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[TopicFactory]:
    """Factory for fresh topics: `topic_factory(3)` creates a 3-partition topic.

    Names are unique (`<prefix>-<random>`), so tests sharing the broker never see each
    other's data. Returns once every partition has a leader, so clients can use it at once.
    """
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="touchstream-tests")

    def create(
        partitions: int = 1,
        *,
        prefix: str = "test",
        config: Mapping[str, str] | None = None,
    ) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        admin.create_topics(
            {
                name: {
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "configs": dict(config or {}),
                }
            },
            wait_for_metadata=True,
        )
        return name

    yield create
    admin.close()
