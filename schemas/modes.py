"""How a producer says an event is history loaded on purpose rather than live.

Over HTTP: ``POST /v1/events?mode=backfill``. On the Kafka input topic: the record
header ``touchstream.mode: backfill`` (live records carry none). A backfill counts in
every window and calendar period the state still keeps, however old, opens no
follow-up and never pages (``streams.pipeline``).
"""

from typing import Final

MODE_HEADER: Final = "touchstream.mode"
BACKFILL: Final = b"backfill"
