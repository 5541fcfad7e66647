"""A child process for the SIGKILL test: submit batches forever, report each acknowledgement.

    python embedded_writer.py DATA_DIR BASE_EPOCH BATCH SNAPSHOT_EVERY

Opens (or recovers) an :class:`EmbeddedRunner` on DATA_DIR, prints ``start N`` where N
is the number of events it recovered, then submits batches of BATCH events made by
:func:`make_item` (event *i* is ``BASE_EPOCH + i`` seconds) from event N on, printing
after every acknowledged submit the number of events acknowledged in total, flushed,
until killed.
The test imports ``CONFIG`` and ``make_item`` so it can rebuild exactly these events.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.embedded import EmbeddedRunner
from streams.engine.config import EngineConfig

CONFIG = EngineConfig(scopes=((), ("channel",), ("segment",), ("channel", "segment")))
CHANNELS = ("web", "app", "phone", "chat")
SEGMENTS = ("smb", "enterprise", "consumer")
MAX_EVENTS = 2_000_000  # a backstop if the parent test dies without killing us


def make_item(i: int, base: int) -> dict[str, Any]:
    """Event *i*: a mix of channels, segments, kinds and journeys, one second apart."""
    kind = ("csat", "nps", "ces")[i % 3]
    value = {"csat": 1 + i * 7 % 5, "nps": i * 3 % 11, "ces": 1 + i % 7}[kind]
    item: dict[str, Any] = {
        "event_id": f"k-{i}",
        "occurred_at": datetime.fromtimestamp(base + i, UTC).isoformat(),
        "customer_id": f"cus-{i % 97}",
        "touchpoint": "support",
        "channel": CHANNELS[i % 4],
        "segment": SEGMENTS[i % 3],
        "kind": kind,
        "value": value,
    }
    if i % 5 == 0:
        item.update(journey_id=f"j-{i // 50}", journey_type="fix", stage="respond")
    return item


async def main(data_dir: Path, base: int, batch: int, snapshot_every: int) -> None:
    runner = EmbeddedRunner(data_dir, CONFIG, snapshot_every=snapshot_every)
    await asyncio.to_thread(runner.open)
    acknowledged = await runner.read(lambda engine: len(engine.seen))
    sys.stdout.write(f"start {acknowledged}\n")
    sys.stdout.flush()
    while acknowledged < MAX_EVENTS:
        items = [make_item(acknowledged + j, base) for j in range(batch)]
        outcomes = await runner.submit(items)
        bad = [o for o in outcomes if o.status != "accepted"]
        if bad:
            raise SystemExit(f"unexpected outcome {bad[0]}")
        acknowledged += batch
        sys.stdout.write(f"{acknowledged}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
