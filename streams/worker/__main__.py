"""``python -m streams.worker``: run one worker with settings from ``TOUCHSTREAM_*`` and
the ``TOUCHSTREAM_CONFIG`` file. ``touchstream worker`` is the same with the command line's
one-line errors; alone, this knows only the workers' keys in a shared file."""

from __future__ import annotations

import faulthandler
import logging
import sys

from pydantic import ValidationError

from streams.worker.app import run_worker
from streams.worker.settings import WorkerSettings
from streams.worker.topics import TopicLayoutError


def main(settings: WorkerSettings | None = None) -> None:
    """Read the settings (unless given), run the worker, turn configuration errors into a
    clear exit: 3, as ``touchstream``'s for a wrong setting."""
    faulthandler.enable()  # a fatal signal in native code (RocksDB) leaves a stack
    logging.basicConfig(level=logging.INFO,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python admin chatter
    if settings is None:
        try:
            settings = WorkerSettings()
        except (ValidationError, ValueError) as exc:
            print(f"touchstream worker: bad settings:\n{exc}", file=sys.stderr)  # noqa: T201
            sys.exit(3)
    try:
        run_worker(settings)
    except TopicLayoutError as exc:
        print(f"touchstream worker: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(3)


if __name__ == "__main__":
    main()
