"""Event files: JSON Lines in and out, and telling a JSONL file from the airline CSV.

Lines are handed on as raw bytes with their line numbers, so the decoder sees exactly
what the file holds (comments in any script stay byte for byte) and a rejection can
name the line it came from.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from streams.sources.airline import TOUCHPOINTS

log = logging.getLogger(__name__)

FileFormat = Literal["jsonl", "airline"]
_BOM: Final = b"\xef\xbb\xbf"
_AIRLINE_COLUMNS: Final = frozenset({"id", "Class", "Type of Travel", "satisfaction"}
                                    | {tp.column for tp in TOUCHPOINTS})
_SNIFF_BYTES: Final = 64 * 1024


def jsonl_events(path: Path | str) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw bytes without the line break) per non-blank line.

    A UTF-8 byte-order mark at the start of the file is dropped; nothing else is
    changed, and nothing is parsed: validation is the decoder's job.
    """
    with Path(path).open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1 and line.startswith(_BOM):
                line = line[len(_BOM):]
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            yield number, line


def write_jsonl(events: Iterable[Mapping[str, Any]], path: Path | str, *,
                append: bool = False) -> int:
    """Write events as compact UTF-8 JSON, one per line; returns how many were written.

    Text is written as UTF-8, never ``\\u`` escaped, so what is read back with
    ``jsonl_events`` is byte for byte what ``orjson.dumps`` made of each event.
    """
    count = 0
    with Path(path).open("ab" if append else "wb") as handle:
        for event in events:
            handle.write(orjson.dumps(event))
            handle.write(b"\n")
            count += 1
    log.debug("wrote %d events to %s", count, path)
    return count


def detect(path: Path | str) -> FileFormat:
    """Which kind of event file ``path`` is: JSON Lines, or the airline survey CSV.

    Judged by content, not by name: the first non-blank line is a JSON object, or a CSV
    header naming the airline survey's columns. Anything else raises ``ValueError``.
    """
    with Path(path).open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if head.startswith(_BOM):
        head = head[len(_BOM):]
    first = next((line for line in head.splitlines() if line.strip()), b"")
    if first.lstrip().startswith(b"{"):
        return "jsonl"
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    header = next(csv.reader(io.StringIO(text)), [])
    columns = {column.strip() for column in header}
    if _AIRLINE_COLUMNS <= columns:
        return "airline"
    raise ValueError(
        f"{path}: not a JSON Lines event file (first line is no JSON object) nor the "
        "airline satisfaction survey CSV (header lacks its columns)"
    )
