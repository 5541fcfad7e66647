"""Retention and the comment policy on a real broker: the topics are created with the
configured retention (the input's ``retention.ms``; the dead-letter topic's
``retention.ms`` and its size bound as ``retention.bytes`` and ``segment.bytes``), and a
worker with ``comments = "redact"`` publishes no e-mail address or phone number in its
partials, follow-ups, checkpoints or dead letters, while the input topic still holds
what producers sent (so the scan would see them); the API on Kafka with ``redact``
produces none either."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from worker_support import (
    TEST_CONFIG,
    Item,
    Workers,
    end_offsets,
    produce,
    read_all,
    wait_until,
    worker_settings,
    write_config,
)

from service.kafka import DeadLetterCollector, watch_dead_letters
from streams.worker import records as rec
from streams.worker.reader import ScoresReader, dead_letter_of, dead_letters_expired
from streams.worker.runner import KafkaRunner
from streams.worker.topics import dlq_size_config, ensure_topics

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
EMAIL = "sigridur.jonsdottir@example.is"
PHONE = "+354 555 1234"
PERSIAN_PHONE = "۰۹۱۲ ۳۴۵ ۶۷۸۹"
SECRETS = [EMAIL, PHONE, PERSIAN_PHONE, "555 1234", "sigridur.jonsdottir", "۳۴۵ ۶۷۸۹"]
COMMENT = f"Þjónustan var hæg. Hringið í {PHONE} eða {EMAIL}; شماره من {PERSIAN_PHONE}"


def _event(i: int, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"cm-{i}", "occurred_at": (NOW + timedelta(seconds=i)).isoformat(),
        "customer_id": f"c-{i % 5}", "segment": "enterprise", "touchpoint": "support",
        "channel": "chat", "kind": "nps", "value": i % 11, "comment": COMMENT}
    event.update(fields)
    return event


def _bytes_of(record: Any) -> bytes:
    return b"".join([record.key or b"", record.value or b"",
                     *(bytes(v) for _, v in (record.headers or ()))])


def _holding(records: list[Any]) -> dict[str, int]:
    """How many records hold each secret, in key, value or headers, byte for byte."""
    found: dict[str, int] = {}
    for record in records:
        data = _bytes_of(record)
        for secret in SECRETS:
            if secret.encode() in data:
                found[secret] = found.get(secret, 0) + 1
    return found


def _configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])["topic"]
    finally:
        admin.close()
    return {name: {k: str(v["value"]) for k, v in entries.items()}
            for name, entries in described.items()}


def test_topics_are_created_with_the_configured_retention(kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:
    name = f"ret-{uuid.uuid4().hex[:8]}"
    settings = worker_settings(kafka_bootstrap, name, tmp_path, input_topic=f"{name}-in",
                               partitions=3, touchpoints_retention_ms=2 * 86_400_000,
                               dlq_retention_ms=14 * 86_400_000,
                               dlq_retention_bytes=300 << 20)
    ensure_topics(settings)
    configs = _configs(kafka_bootstrap, [settings.topic_touchpoints, settings.topic_dlq])
    assert configs[settings.topic_touchpoints]["retention.ms"] == str(2 * 86_400_000)
    assert configs[settings.topic_touchpoints].get("retention.bytes", "-1") == "-1"
    dlq = configs[settings.topic_dlq]
    assert dlq["retention.ms"] == str(14 * 86_400_000)
    share = dlq_size_config(300 << 20, 3)
    assert (dlq["retention.bytes"], dlq["segment.bytes"]) == (
        share["retention.bytes"], share["segment.bytes"])
    # per partition at most retention.bytes of closed segments plus the open one
    assert 3 * (int(dlq["retention.bytes"]) + int(dlq["segment.bytes"])) == 300 << 20
    assert dlq["cleanup.policy"] == "delete"


async def test_a_worker_with_redact_publishes_no_e_mail_or_phone(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    name = f"cm-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-touchpoints"
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "state", input_topic=topic,
                               partitions=2, comments="redact")
    ensure_topics(settings)
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    valid = [_event(i) for i in range(40)]  # nps 0-10: detractors become follow-ups
    valid += [_event(40 + i, kind="outcome", value="unresolved") for i in range(5)]
    invalid = [_event(100, value=42), _event(101, occurred_at="yesterday")]
    items = [Item(e["customer_id"].encode(), json.dumps(e, ensure_ascii=False).encode(),
                  "valid") for e in valid]
    items += [Item(b"c-1", json.dumps(e, ensure_ascii=False).encode(), "invalid")
              for e in invalid]
    broken = f'{{"comment": "{EMAIL}", "kind": "nps", {PHONE}'.encode()
    items.append(Item(b"c-2", broken, "invalid"))
    workers = Workers(tmp_path)
    try:
        workers.start("w1", settings, config_path)
        produce(kafka_bootstrap, topic, items)
        async with ScoresReader.from_settings(settings, TEST_CONFIG) as reader:
            await reader.wait_for_offsets(end_offsets(kafka_bootstrap, topic), 90)
            assert reader.counters().get("accepted") == len(valid), reader.counters()
            assert reader.counters().get("rejected") == 3, reader.counters()
        changelog = wait_until(
            lambda: read_all(kafka_bootstrap, settings.checkpoint_changelog),
            30, lambda: "no checkpoint written\n" + workers.logs())
        followups = wait_until(lambda: read_all(kafka_bootstrap, settings.topic_followups),
                               30, lambda: "no follow-up published\n" + workers.logs())
        dead = wait_until(
            lambda: (lambda r: r if len(r) == 3 else None)(
                read_all(kafka_bootstrap, settings.topic_dlq)),
            30, lambda: "not every dead letter published\n" + workers.logs())
        partials = read_all(kafka_bootstrap, settings.partials_topic)
        assert partials
        workers.check_alive()
    finally:
        workers.kill_all()
    # The producers' bytes are on the input topic (its retention bounds them): the scan
    # sees them there, and nowhere the worker writes.
    assert _holding(read_all(kafka_bootstrap, topic)).get(EMAIL) == len(items)
    assert _holding(partials) == {}
    assert _holding(changelog) == {}
    assert _holding(followups) == {}
    assert _holding(dead) == {}
    # What the rest of the comment said is kept in the dead letters, with the original's
    # size and digest: the letter still identifies what was received.
    originals = {hashlib.sha256(i.value or b"").hexdigest(): i.value for i in items}
    for record in dead:
        letter = dead_letter_of(record.headers, record.value, record.timestamp, 1 << 16)
        assert letter["sha256"] in originals
        assert letter["size"] == len(originals[letter["sha256"]] or b"")
        assert dict(record.headers)[rec.H_SHA256] == letter["sha256"].encode()
        assert "[email]" in letter["payload"]
        assert "Þjónustan var hæg" in letter["payload"] or letter["field"] == "$"


async def test_the_kafka_api_with_redact_produces_no_e_mail_or_phone(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """``touchstream api`` (``KafkaRunner``) with ``comments = "redact"``: an accepted
    event goes to the input topic as the policy keeps it (its canonical JSON, not the
    client's bytes), a rejected one to the dead-letter topic scrubbed, with the
    original's size and digest in its headers; an event without a comment keeps the
    client's bytes."""
    name = f"cma-{uuid.uuid4().hex[:8]}"
    settings = worker_settings(kafka_bootstrap, name, tmp_path, input_topic=f"{name}-in",
                               partitions=2, comments="redact")
    ensure_topics(settings)
    items = [_event(1), _event(2, value=42), {k: v for k, v in _event(3).items()
                                              if k != "comment"}]
    raws = [json.dumps(item, ensure_ascii=False, indent=1).encode() for item in items]
    runner = KafkaRunner(settings)
    await runner.start()
    try:
        outcomes = await runner.submit(items, raws.__getitem__)
    finally:
        await runner.stop()
    assert [o.status for o in outcomes] == ["accepted", "rejected", "accepted"]
    produced = read_all(kafka_bootstrap, settings.topic_touchpoints)
    dead = read_all(kafka_bootstrap, settings.topic_dlq)
    assert _holding(produced) == {} and _holding(dead) == {}
    values = {json.loads(r.value)["event_id"]: r.value for r in produced}
    assert json.loads(values["cm-1"])["comment"] == (
        "Þjónustan var hæg. Hringið í [phone] eða [email]; شماره من [phone]")
    assert values["cm-3"] == raws[2]  # nothing to redact: the client's bytes
    (letter,) = [dead_letter_of(r.headers, r.value, r.timestamp, 1 << 16) for r in dead]
    assert (letter["size"], letter["sha256"]) == (
        len(raws[1]), hashlib.sha256(raws[1]).hexdigest())
    assert json.loads(letter["payload"])["value"] == 42


async def test_dead_letters_the_broker_deleted_are_counted(kafka_bootstrap: str,
                                                           tmp_path: Path) -> None:
    """``touchstream_dead_letters_expired_total`` on Kafka: what the dead-letter topic's
    retention deleted, oldest first, read from its partitions' first offsets (the broker
    applies retention every 5 minutes: here the oldest records are deleted as retention
    would, by DeleteRecords)."""
    name = f"exp-{uuid.uuid4().hex[:8]}"
    settings = worker_settings(kafka_bootstrap, name, tmp_path, input_topic=f"{name}-in",
                               partitions=2, dlq_partitions=2)
    ensure_topics(settings)
    produce(kafka_bootstrap, settings.topic_dlq,
            [Item(f"k{i}".encode(), b"{}", "invalid") for i in range(10)])
    assert await dead_letters_expired(settings) == 0
    ends = end_offsets(kafka_bootstrap, settings.topic_dlq)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.delete_records({TopicPartition(settings.topic_dlq, p): min(3, end)
                              for p, end in ends.items()})
    finally:
        admin.close()
    gone = sum(min(3, end) for end in ends.values())
    assert gone > 0
    assert await dead_letters_expired(settings) == gone
    collector = DeadLetterCollector()
    assert list(collector.collect()) == []  # nothing read yet: no figure
    watching = asyncio.create_task(watch_dead_letters(settings, collector, every=0.1))
    try:
        for _ in range(100):
            if collector.expired is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        watching.cancel()
    (family,) = collector.collect()
    assert family.name == "touchstream_dead_letters_expired"
    assert family.samples[0].value == gone


def test_a_shorter_retention_configured_later_applies_to_existing_topics(
        kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    name = f"ret2-{uuid.uuid4().hex[:8]}"
    before = worker_settings(kafka_bootstrap, name, tmp_path, input_topic=f"{name}-in",
                             partitions=2)
    ensure_topics(before)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:  # something an operator set by hand stays
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, before.topic_dlq,
                                            configs={"min.insync.replicas": "1",
                                                     "max.message.bytes": "2000000"})])
    finally:
        admin.close()
    after = before.model_copy(update={"touchpoints_retention_ms": 3_600_000,
                                      "dlq_retention_ms": 7_200_000,
                                      "dlq_retention_bytes": 64 << 20})
    with caplog.at_level(logging.INFO, logger="streams.worker.topics"):
        assert ensure_topics(after) == []
    configs = _configs(kafka_bootstrap, [after.topic_touchpoints, after.topic_dlq])
    assert configs[after.topic_touchpoints]["retention.ms"] == "3600000"
    share = dlq_size_config(64 << 20, after.dead_letter_partitions)
    assert (configs[after.topic_dlq]["retention.ms"], configs[after.topic_dlq]["retention.bytes"],
            configs[after.topic_dlq]["segment.bytes"]) == (
        "7200000", share["retention.bytes"], share["segment.bytes"])
    assert configs[after.topic_dlq]["max.message.bytes"] == "2000000"
    assert "could not set" not in caplog.text
    assert f"topic {after.topic_dlq}: retention set to" in caplog.text
    # Without create_topics the worker leaves them and says so.
    hands_off = after.model_copy(update={"create_topics": False,
                                         "touchpoints_retention_ms": 60_000})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streams.worker.topics"):
        ensure_topics(hands_off)
    assert "TOUCHSTREAM_CREATE_TOPICS is off" in caplog.text
    assert _configs(kafka_bootstrap, [after.topic_touchpoints])[
        after.topic_touchpoints]["retention.ms"] == "3600000"
