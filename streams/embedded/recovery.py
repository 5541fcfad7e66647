"""Recovery of the embedded runner: the newest snapshot, then every later log row.

Batches are replayed exactly as they were submitted, never split or merged, through the
same :class:`~streams.pipeline.Pipeline` as on submission: the engine sweeps journey
timeouts and prunes its dedupe table per batch, and the detector evaluates when event
time enters a new minute, so the same batches reproduce the same engine, alerts and
follow-ups as a process that never stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from schemas.event import TouchpointEvent
from streams.detection import FollowUpUpdate
from streams.embedded.store import BACKFILL, EVENT, CommandLog, StorageError
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.engine.pulses import PulseError
from streams.pipeline import Pipeline, Report
from streams.runner import ERASE, FOLLOWUP_UPDATE, apply_command, decode_erase

log = logging.getLogger(__name__)

Replayed = Callable[[Report, list[bytes]], None]
"""Called with each replayed batch's report and the logged bytes of its events."""


def restore(store: CommandLog, config: EngineConfig, pipeline: Pipeline) -> int:
    """Put the newest snapshot's engine and detector into ``pipeline``; returns the
    snapshot's seq (0 without one)."""
    found = store.latest_snapshot()
    if found is None:
        return 0
    seq, data, detector = found
    try:
        pipeline.engine = Engine.restore(config, data)
        if detector is not None and pipeline.detector is not None:
            pipeline.detector.restore(msgspec.msgpack.decode(detector))
    except (ValueError, KeyError, TypeError, msgspec.DecodeError) as exc:
        raise StorageError(store.path, f"snapshot at seq {seq} cannot be restored "
                                       f"({exc})") from exc
    return seq


def replay(store: CommandLog, pipeline: Pipeline, after: int, replayed: Replayed) -> int:
    """Apply every log row with ``seq > after`` in order, re-forming the batches;
    returns the number of rows."""
    decoder = msgspec.json.Decoder(TouchpointEvent)
    count = 0
    events: list[TouchpointEvent] = []
    payloads: list[bytes] = []
    batch_of: int | None = None
    kind_of = EVENT

    def flush() -> None:
        if events:
            replayed(pipeline.apply(list(events), backfill=kind_of == BACKFILL),
                     list(payloads))
            events.clear()
            payloads.clear()

    for seq, kind, payload, batch in store.rows_after(after):
        count += 1
        if events and (kind != kind_of or batch != batch_of):
            flush()
        if kind in (EVENT, BACKFILL):
            kind_of = kind
            try:
                events.append(decoder.decode(payload))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise StorageError(store.path, f"log row {seq} is corrupt ({exc})") from exc
            payloads.append(payload)
            batch_of = batch
        else:
            _command(store, pipeline, seq, kind, payload)
    flush()
    return count


def _command(store: CommandLog, pipeline: Pipeline, seq: int, kind: str,
             payload: bytes) -> None:
    if kind == FOLLOWUP_UPDATE:
        if pipeline.detector is None:
            return
        try:
            pipeline.detector.followups.apply(FollowUpUpdate.decode(payload))
        except (KeyError, ValueError) as exc:  # e.g. no longer kept: nothing to redo
            log.warning("log row %d (%s) not applied: %s", seq, kind, exc)
        return
    try:
        apply_command(pipeline.engine, kind, payload)
        if kind == ERASE and pipeline.detector is not None:
            customer_id = decode_erase(payload).customer_id
            if customer_id:
                pipeline.detector.followups.erase_customer(customer_id)
    except PulseError as exc:
        raise StorageError(store.path, f"log row {seq} ({kind}) cannot be replayed "
                                       f"({exc})") from exc
