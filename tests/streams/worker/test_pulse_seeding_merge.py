"""Pulse studies seeded from the state on Kafka, without a broker (issue 18, item 3):
every input partition applies the ``pulse_start`` control record to its own engine,
seeded from its own buckets; the merged view sums the partitions' studies. The sum
equals one engine fed every event with the study started at the same point, and late
answers in the baseline that arrive after the start count once."""

from __future__ import annotations

import random
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from schemas import EventDecoder
from schemas.decode import EventError
from streams.engine.engine import Engine
from streams.engine.pulses import PulseStudy, Seed, merge_studies
from streams.runner import PULSE_START, PulseRequest, apply_command, encode_pulse_start
from streams.worker import records as rec
from streams.worker.merge import MergedView
from streams.worker.partition import PartitionState
from tests.integration.worker_support import TEST_CONFIG, Item, make_stream
from tests.streams.worker.record_support import Record

HOUR = 3600
DAY = 86_400
PARTITIONS = 3




def decodable(items: list[Item]) -> list[bytes]:
    decoder = EventDecoder()
    out = []
    for item in items:
        if item.value is None:
            continue
        try:
            decoder.decode(item.value)
        except EventError:
            continue
        out.append(item.value)
    return out


def requests(first: int, now: int) -> list[PulseRequest]:
    """A baseline last week (whole hours), a study that started a day ago."""
    lo = (first // HOUR + 2) * HOUR
    spans = (now - now % HOUR - DAY, now + DAY, lo, lo + 7 * DAY)
    return [
        PulseRequest("chat-web", "Chat and web", {"channel": ["chat", "web"]}, *spans),
        PulseRequest("all", "Everyone", {}, *spans),
        PulseRequest("pair", "Enterprise chat", {"segment": ["enterprise"],
                                                 "channel": ["chat"]}, *spans),
        PulseRequest("touch", "Not a scope", {"touchpoint": ["survey"]}, *spans),
        PulseRequest("odd", "Off the hours", {"channel": ["chat"]}, now - DAY + 1234,
                     now + DAY, lo + 1234, lo + 3 * DAY + 777),
    ]


def books(study: PulseStudy) -> dict[str, dict[str, list[float]]]:
    return {side: {m: v.tolist() for m, v in sorted(book.items()) if v.any()}
            for side, book in (("baseline", study.baseline), ("study", study.study))}


@pytest.mark.parametrize("seed", [11, 12])
def test_partitions_seeded_apart_merge_to_one_engines_study(seed: int) -> None:
    rng = random.Random(seed)
    now = int(datetime.now(UTC).timestamp())
    start = datetime.fromtimestamp(now, UTC) - timedelta(days=10)
    before = make_stream(2500, seed=seed, start=start, span=timedelta(days=9, hours=20),
                         late=0)
    # After the start: answers late by days whose times lie in the baseline (within the
    # lateness horizon), resends of answers already counted, and new answers.
    after = make_stream(300, seed=seed + 100, start=start + timedelta(days=1),
                        span=timedelta(days=6), late=0, first_id=10_000)
    after += rng.sample([i for i in before if i.kind == "valid"], 40)  # resends
    after += make_stream(200, seed=seed + 200, start=start + timedelta(days=9, hours=21),
                         span=timedelta(hours=2), late=0, first_id=20_000)
    studies = requests(int(start.timestamp()), now)

    # One engine: every event, the commands at the same point.
    one = Engine(TEST_CONFIG)
    decoder = EventDecoder()
    one.ingest([decoder.decode(v) for v in decodable(before)])
    for request in studies:
        apply_command(one, PULSE_START, encode_pulse_start(request))
    one.ingest([decoder.decode(v) for v in decodable(after)])

    # Partitions: each its share, the control records in every partition between.
    view = MergedView(TEST_CONFIG)
    controls = [Record(0, None, encode_pulse_start(r), None,
                       ((rec.H_CONTROL, PULSE_START.encode()),)) for r in studies]
    for p in range(PARTITIONS):
        mine = [Record(0, i.key, i.value) for i in before
                if zlib.crc32(i.key or b"") % PARTITIONS == p]
        mine += controls
        mine += [Record(0, i.key, i.value) for i in after
                 if zlib.crc32(i.key or b"") % PARTITIONS == p]
        laid = [Record(n, r.key, r.value, r.timestamp, r.headers) for n, r in enumerate(mine)]
        state = PartitionState.fresh(p, TEST_CONFIG)
        position = 0
        while position < len(laid):
            batch = laid[position: position + rng.randint(1, 200)]
            state.process(batch)
            position += len(batch)
        for key, value in state.partial_records():
            view.apply(key, value)
    merged = view.engine().pulses

    for request in studies:
        want, got = one.pulses[request.pulse_id], merged[request.pulse_id]
        assert got.seeds == want.seeds, request.pulse_id
        assert books(got).keys() == books(want).keys()
        for side in ("baseline", "study"):
            g, w = books(got)[side], books(want)[side]
            assert g.keys() == w.keys(), (request.pulse_id, side)
            for metric in w:
                np.testing.assert_allclose(g[metric], w[metric], rtol=1e-12,
                                           err_msg=f"{request.pulse_id} {side} {metric}")
    chat_web = one.pulses["chat-web"]
    assert chat_web.seeds["baseline"].source == "state"
    assert chat_web.seeds["baseline"].granularity == "3600s"
    assert chat_web.seeds["study"].granularity == "3600s"
    assert sum(v[0] for v in chat_web.baseline.values()) > 300  # the state was counted
    assert one.pulses["touch"].seeds["baseline"].source == "live only"
    assert not one.pulses["odd"].seeds["baseline"].exact


def test_partitions_that_seeded_differently_say_so() -> None:
    """A partition whose state no longer keeps the hours of the span sums the days: the
    merged study says the partitions did not take the state alike."""
    a = PulseStudy("p", "x", {}, 100 * DAY, 101 * DAY, 90 * DAY, 91 * DAY, 100 * DAY)
    b = PulseStudy.from_state(a.state())
    a.seeds = {"baseline": Seed("state", 90 * DAY, 91 * DAY, "3600s"),
               "study": Seed("state", 100 * DAY, 101 * DAY, "60s")}
    b.seeds = {"baseline": Seed("live only", 90 * DAY, 91 * DAY, note="too old"),
               "study": Seed("state", 100 * DAY, 101 * DAY, "60s")}
    merged = merge_studies([[a.state()], [b.state()]])["p"]
    assert merged.seeds["study"] == Seed("state", 100 * DAY, 101 * DAY, "60s")
    baseline = merged.seeds["baseline"]
    assert baseline.source == "mixed"
    assert baseline.note is not None
    assert "1 state (hourly" in baseline.note and "1 live only" in baseline.note
    assert "too old" in baseline.note
