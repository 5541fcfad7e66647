"""``python -m streams.worker``: run one worker with settings from ``TOUCHSTREAM_*``."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from streams.worker.app import run_worker
from streams.worker.settings import WorkerSettings
from streams.worker.topics import TopicLayoutError


def main() -> None:
    """Read the settings, run the worker, turn configuration errors into a clear exit."""
    logging.basicConfig(level=logging.INFO,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python admin chatter
    try:
        settings = WorkerSettings()
    except ValidationError as exc:
        print(f"touchstream worker: bad settings:\n{exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    try:
        run_worker(settings)
    except TopicLayoutError as exc:
        print(f"touchstream worker: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(3)


if __name__ == "__main__":
    main()
