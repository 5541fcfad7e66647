"""Decode + validate one touchpoint event: touchstream's msgspec decoder vs alternatives.

Prints microseconds per event for each decoder, measured side by side in one run, and
the ratio to plain ``json.loads`` (which parses but validates nothing); then the comment
policy (``EventDecoder(comments=...)``, issue 21) on the workers' batch path,
``decode_many`` over batches of 10,000: ``keep`` (the default), ``drop`` and ``redact``,
with the sample's comment (nothing to mask) and with one holding an e-mail address and a
phone number.

    python benchmarks/bench_decode.py [--events N]
"""

from __future__ import annotations

import argparse
import json
import timeit
from datetime import UTC, datetime, timedelta
from functools import partial

import msgspec
import orjson

from schemas import EventDecoder
from schemas.redact import POLICIES

SAMPLE = {
    "event_id": "4b7f1c52-90d3-4f1e-9a7e-3c2d8e6f1a0b",
    "source": "ivr-survey",
    "occurred_at": "2026-11-24T09:15:27.123+01:00",
    "customer_id": "cus-00042117",
    "segment": "enterprise",
    "offering": "premium",
    "journey_type": "technical_problem",
    "journey_id": "jrn-99120",
    "stage": "respond",
    "touchpoint": "support_call",
    "channel": "phone",
    "owner": "support",
    "kind": "nps",
    "value": 9,
    "comment": "Þjónustan var frábær",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    data = json.dumps(SAMPLE, ensure_ascii=False).encode()
    now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC) + timedelta(minutes=20)
    decoder = EventDecoder(clock=now.timestamp)
    candidates = {
        "json.loads (no validation)": lambda: json.loads(data),
        "orjson.loads (no validation)": lambda: orjson.loads(data),
        "touchstream EventDecoder (msgspec)": lambda: decoder.decode(data),
        "msgspec untyped (no validation)": lambda: msgspec.json.decode(data),
        "orjson.loads + EventDecoder.convert": lambda: decoder.convert(orjson.loads(data)),
    }
    print(f"event size: {len(data)} bytes; {args.events:,} decodes each, best of 5")
    base = None
    for name, fn in candidates.items():
        best = min(timeit.repeat(fn, number=args.events, repeat=5)) / args.events * 1e6
        base = base or best
        print(f"{name:38s} {best:6.2f} µs/event   x{best / base:4.2f} of json.loads")
    personal = dict(SAMPLE, comment="Þjónustan var hæg, hringið í +354 555 1234 eða "
                                    "jon@example.is")
    batch = 10_000
    rounds = max(1, args.events // batch)
    print(f"comment policy: decode_many, batches of {batch:,}, {rounds * batch:,} events "
          "each, best of 5")
    keep_best = None
    for text, sample in (("sample comment", SAMPLE), ("e-mail + phone", personal)):
        values = [json.dumps(sample, ensure_ascii=False).encode()] * batch
        for policy in POLICIES:
            many = EventDecoder(clock=now.timestamp, comments=policy)
            best = min(timeit.repeat(partial(many.decode_many, values),
                                     number=rounds, repeat=5)) / (rounds * batch) * 1e6
            keep_best = keep_best or best
            print(f"decode_many comments={policy:6s} {text:15s} {best:6.2f} µs/event"
                  f"   x{best / keep_best:4.2f} of keep")


if __name__ == "__main__":
    main()
