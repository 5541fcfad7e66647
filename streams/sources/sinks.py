"""Where generated or replayed events go: the HTTP API, Kafka, a file, or an engine.

Every destination is a ``Sink`` with one small interface — ``await send(batch)``
returning a ``SendReport`` of what the destination made of the batch, and
``await close()`` — so the command line can point a simulator or a file replay at any
of them. ``pump`` drives an event stream (plain or async) into a sink in batches.
"""

from __future__ import annotations

import abc
import asyncio
import email.utils
import logging
import time
from collections import Counter
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import orjson

from schemas.decode import EventDecoder, EventError
from schemas.modes import BACKFILL, MODE_HEADER
from streams.deadletters import LATE_FIELD, late_reason

if TYPE_CHECKING:
    import httpx

    from streams.engine.engine import Engine

log = logging.getLogger(__name__)

Event = Mapping[str, Any]
RETRY_STATUSES: Final = frozenset({429, 503})


class SinkError(RuntimeError):
    """A batch could not be delivered (after any retries).

    ``report`` counts what of the batch was delivered before the failure (earlier
    chunks of a batch larger than the sink's chunk size), when anything was.
    """

    def __init__(self, message: str, report: SendReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class SinkAuthError(SinkError):
    """The destination refused our credentials (HTTP 401 or 403)."""


@dataclass(slots=True)
class SendReport:
    """What became of sent events: accepted, or duplicate, late or rejected (with reasons).

    ``reasons`` counts rejections by ``"field: reason"``, ``late_reasons`` late events
    the same way; ``retries`` counts requests repeated after a 429/503 or a connection
    error.
    """

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    late: int = 0
    retries: int = 0
    late_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, other: SendReport) -> SendReport:
        """Fold another report into this one; returns self."""
        self.sent += other.sent
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.reasons.update(other.reasons)
        self.duplicates += other.duplicates
        self.late += other.late
        self.retries += other.retries
        self.late_reasons.update(other.late_reasons)
        return self


class Sink(abc.ABC):
    """A destination for batches of JSON-ready event dicts."""

    @abc.abstractmethod
    async def send(self, batch: list[dict[str, Any]]) -> SendReport:
        """Deliver one batch; the report counts every event in it."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and files; the sink is unusable afterwards."""

    async def __aenter__(self) -> Sink:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


def _chunks(batch: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(batch), size):
        yield batch[i:i + size]


# -- HTTP ------------------------------------------------------------------------------


class HttpSink(Sink):
    """Posts batches to touchstream's ``POST /v1/events`` with a bearer API key.

    Batches larger than ``batch_size`` go as several requests. A 429 or 503 is retried
    after its ``Retry-After`` (seconds or an HTTP date; capped at ``max_retry_after``),
    or after an exponential backoff without one, at most ``max_retries`` times; so is a
    connection error. Retrying a POST is safe because ingestion is idempotent on
    ``event_id`` (a repeat comes back as ``duplicate``). A 401 or 403 raises
    ``SinkAuthError`` at once; any other error status raises ``SinkError``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        batch_size: int = 500,
        *,
        max_retries: int = 5,
        max_retry_after: float = 60.0,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        backfill: bool = False,
    ) -> None:
        import httpx  # imported here: the file, engine and Kafka sinks never need it

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.url = base_url.rstrip("/") + "/v1/events" + ("?mode=backfill" if backfill else "")
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {api_key}",
                     "Content-Type": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    async def send(self, batch: list[dict[str, Any]]) -> SendReport:
        """Post the batch in chunks of ``batch_size``; counts each event's status."""
        report = SendReport()
        for chunk in _chunks(batch, self.batch_size):
            try:
                body, retries = await self._post(orjson.dumps({"events": chunk}))
            except SinkError as exc:
                exc.report = report
                raise
            report.retries += retries
            report.add(self._read(body, len(chunk)))
        return report

    async def _post(self, body: bytes) -> tuple[Any, int]:
        import httpx

        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = await self._client.post(self.url, content=body)
            except httpx.TransportError as exc:
                if last:
                    raise SinkError(f"POST {self.url}: {exc!r} "
                                    f"(gave up after {attempt} retries)") from exc
                delay = self._backoff(attempt)
                log.warning("POST %s failed (%r); retrying in %.1f s", self.url, exc, delay)
                await self._sleep(delay)
                continue
            status = response.status_code
            if status in (401, 403):
                raise SinkAuthError(
                    f"POST {self.url}: {status} {response.reason_phrase}: "
                    f"{_detail(response)} - check the API key and its scopes")
            if status in RETRY_STATUSES:
                if last:
                    raise SinkError(f"POST {self.url}: still {status} after "
                                    f"{attempt} retries: {_detail(response)}")
                delay = self._retry_after(response.headers.get("retry-after"), attempt)
                log.warning("POST %s: %d; retrying in %.1f s", self.url, status, delay)
                await self._sleep(delay)
                continue
            if status == 413:
                raise SinkError(f"POST {self.url}: 413 batch too large: {_detail(response)} "
                                "- use a smaller batch_size")
            if not response.is_success:
                raise SinkError(f"POST {self.url}: {status} {response.reason_phrase}: "
                                f"{_detail(response)}")
            return response.json(), attempt
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _backoff(self, attempt: int) -> float:
        return float(min(0.25 * 2**attempt, self.max_retry_after))

    def _retry_after(self, header: str | None, attempt: int) -> float:
        """Seconds to wait: the ``Retry-After`` header (seconds or a date), else backoff."""
        if header:
            header = header.strip()
            if header.isdigit():
                return min(float(header), self.max_retry_after)
            try:
                when = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                wait = (when - datetime.now(UTC)).total_seconds()
                return min(max(wait, 0.0), self.max_retry_after)
        return self._backoff(attempt)

    @staticmethod
    def _read(body: Any, expected: int) -> SendReport:
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list) or len(results) != expected:
            got = len(results) if isinstance(results, list) else "no"
            raise SinkError(f"response has {got} results for {expected} events")
        report = SendReport(sent=expected)
        for result in results:
            status = result.get("status")
            if status == "accepted":
                report.accepted += 1
            elif status == "duplicate":
                report.duplicates += 1
            elif status == "late":
                report.late += 1
                report.late_reasons[f"{result.get('field')}: {result.get('reason')}"] += 1
            else:
                report.rejected += 1
                report.reasons[f"{result.get('field')}: {result.get('reason')}"] += 1
        return report

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:200]
    return str(body)[:200]


# -- Kafka -----------------------------------------------------------------------------


class KafkaSink(Sink):
    """Produces each event to a Kafka topic, keyed by ``customer_id`` (acks=all).

    Values are compact JSON (orjson); the key keeps one customer's events in one
    partition, in order. Each batch is flushed and every record's acknowledgement
    awaited: ``accepted`` counts records the broker acknowledged, ``rejected`` those it
    did not (by error type). The record timestamp is the send time, not the event time:
    replayed old events would otherwise fall straight out of time-based retention.
    The blocking kafka-python producer runs in a worker thread.
    """

    def __init__(self, bootstrap: str, topic: str, *, client_id: str = "touchstream-sink",
                 timeout: float = 60.0, backfill: bool = False,
                 **producer_config: Any) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self.headers = [(MODE_HEADER, BACKFILL)] if backfill else None
        """``backfill``: every record says so (the workers count it as history)."""
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap, "client_id": client_id, "acks": "all",
            "linger_ms": 5, **producer_config,
        }
        self._producer: Any = None

    async def send(self, batch: list[dict[str, Any]]) -> SendReport:
        """Produce the batch, flush, and count acknowledgements."""
        return await asyncio.to_thread(self._send_blocking, batch)

    def _send_blocking(self, batch: list[dict[str, Any]]) -> SendReport:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError, KafkaTimeoutError

        if self._producer is None:
            try:
                self._producer = KafkaProducer(**self._config)
            except KafkaError as exc:
                raise SinkError(f"Kafka at {self.bootstrap}: {exc!r}") from exc
        producer = self._producer
        report = SendReport(sent=len(batch))
        futures = []
        for event in batch:
            customer = event.get("customer_id")
            key = customer.encode("utf-8") if isinstance(customer, str) else None
            try:
                futures.append(producer.send(self.topic, value=orjson.dumps(event), key=key,
                                             headers=self.headers))
            except Exception as exc:  # serialisation or a producer refusing the record
                report.rejected += 1
                report.reasons[f"kafka: {type(exc).__name__}"] += 1
        try:
            producer.flush(timeout=self.timeout)
        except KafkaTimeoutError:
            log.warning("Kafka %s: batch not flushed within %.0f s", self.topic, self.timeout)
        for future in futures:
            if future.succeeded():
                report.accepted += 1
                continue
            report.rejected += 1
            reason = type(future.exception).__name__ if future.failed() else "not acknowledged"
            report.reasons[f"kafka: {reason}"] += 1
        return report

    async def close(self) -> None:
        """Flush what is pending and close the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(producer.close, self.timeout)


# -- file ------------------------------------------------------------------------------


class FileSink(Sink):
    """Appends events to a JSON Lines file (compact UTF-8 JSON, one event per line)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._handle: BinaryIO | None = None

    async def send(self, batch: list[dict[str, Any]]) -> SendReport:
        """Append the batch and flush it to the OS; every written event is accepted."""
        if self._handle is None:
            self._handle = self.path.open("ab")
        self._handle.write(b"".join(orjson.dumps(event) + b"\n" for event in batch))
        self._handle.flush()
        return SendReport(sent=len(batch), accepted=len(batch))

    async def close(self) -> None:
        """Close the file."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()


# -- engine ----------------------------------------------------------------------------


class EngineSink(Sink):
    """Feeds an in-process ``Engine`` directly: validate, then ingest.

    Events that fail the contract are counted as rejected by ``"field: reason"``;
    the engine's duplicates and late events are counted as such.
    """

    def __init__(self, engine: Engine, decoder: EventDecoder | None = None) -> None:
        self.engine = engine
        self.decoder = decoder or EventDecoder()

    async def send(self, batch: list[dict[str, Any]]) -> SendReport:
        """Validate and ingest the batch in this thread (the engine is not thread-safe)."""
        return self.ingest(batch)

    def ingest(self, batch: list[dict[str, Any]]) -> SendReport:
        """The synchronous body of ``send``, for callers without an event loop."""
        report = SendReport(sent=len(batch))
        valid = []
        for event in batch:
            try:
                valid.append(self.decoder.convert(event))
            except EventError as exc:
                report.rejected += 1
                report.reasons[f"{exc.field}: {exc.reason}"] += 1
        result = self.engine.ingest(valid)
        report.accepted = result.accepted
        report.duplicates = len(result.duplicates)
        report.late = len(result.late)
        if result.late:
            reason = late_reason(self.engine.config.lateness_horizon)
            report.late_reasons[f"{LATE_FIELD}: {reason}"] += report.late
        return report

    async def close(self) -> None:
        """Nothing to release: the engine belongs to the caller."""


# -- driving a sink --------------------------------------------------------------------


async def pump(
    events: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]],
    sink: Sink,
    *,
    batch_size: int = 500,
    linger: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    on_report: Callable[[SendReport], None] | None = None,
) -> SendReport:
    """Send a stream of events to ``sink`` in batches; returns the summed report.

    A batch goes when it holds ``batch_size`` events, or when its first event has
    waited ``linger`` seconds (checked as events arrive, so a paced live stream shows
    up promptly), and at the end. ``on_report`` sees each batch's report (progress).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = SendReport()
    batch: list[dict[str, Any]] = []
    first = 0.0

    async def flush() -> None:
        nonlocal batch
        report = await sink.send(batch)
        batch = []
        total.add(report)
        if on_report is not None:
            on_report(report)

    async def take(event: dict[str, Any]) -> None:
        nonlocal first
        if not batch:
            first = clock()
        batch.append(event)
        if len(batch) >= batch_size or clock() - first >= linger:
            await flush()

    if isinstance(events, AsyncIterable):
        async for event in events:
            await take(event)
    else:
        for event in events:
            await take(event)
    if batch:
        await flush()
    return total
