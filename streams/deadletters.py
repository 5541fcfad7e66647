"""The dead-letter contract: what both runners keep of what they did not count, and how
``GET /v1/dead-letters`` shows it. Transport-free: the embedded runner stores it in
SQLite, the Kafka runner in its dead-letter topic, and both answer with :func:`letter`.

A dead letter is::

    {"kind": "invalid", "field": "value", "reason": "Expected `int` <= 5",
     "received_at": "2026-01-05T10:00:00.123+00:00",
     "source": {"topic": "http", "partition": null, "offset": null, "index": 1},
     "size": 164, "sha256": "9f86d0…", "truncated": false,
     "payload": "{\\"event_id\\": \\"e-2\\", …}", "payload_base64": null}

- ``kind``: one of :data:`KINDS` (below), the same word on both runners.
- ``field``, ``reason``: what is wrong, as the POST answer said it (``$``: the whole).
- ``received_at``: when it was received (ISO-8601, UTC, milliseconds).
- ``source``: where it came from; every key always present, ``null`` when it does not
  apply. ``topic`` is ``"http"`` for what the API refused or (embedded) took in over
  HTTP, else the Kafka input topic with its ``partition`` and ``offset``; ``index`` is
  the event's position in its HTTP batch (``null`` for a body refused whole and for
  Kafka records).
- ``size``, ``sha256``: the length and hex SHA-256 of the WHOLE original bytes.
- ``payload``: the original bytes exactly as received (an event inside a batch body:
  that event's own bytes as they stand in the body), at most ``dead_letter_max_bytes``
  of them (``truncated`` says whether some were cut), shown as UTF-8 text;
  ``payload_base64`` is ``null`` when that text is exact, else the same bytes in base64
  (bytes that are not UTF-8, or a cut through a character): ``payload_base64`` when
  not null, else ``payload`` encoded as UTF-8, gives the kept bytes back exactly.

The comment policy (``comments``, ``schemas.redact``) reaches dead letters too: with
``drop`` or ``redact``, the kept payload is :func:`scrubbed` — in a payload that is JSON,
every ``comment`` member is dropped or redacted as the policy says and the rest
re-encoded; a payload that is not JSON (it cannot tell where a comment is) has its
e-mail addresses and phone numbers masked wherever they are — while ``size`` and
``sha256`` stay those of the original bytes, so a letter still identifies what was
received without holding it. A scrubbed payload is no longer the original: it does not
hash to ``sha256``. With ``keep`` (the default) the payload is the original's.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
import orjson

from schemas.redact import CommentPolicy, redact
from schemas.redact import apply as apply_policy

Kind = Literal["invalid", "late", "bad_body", "bad_command"]
KINDS: Final[tuple[Kind, ...]] = ("invalid", "late", "bad_body", "bad_command")
"""``invalid``: an event that failed validation (HTTP or a Kafka record); ``late``: an
event older than the watermark minus the lateness horizon (kept, not counted);
``bad_body``: an HTTP body refused whole (not JSON, not an event batch: 400);
``bad_command``: a control record that cannot apply (Kafka runner; ``field`` is
``control.<field>``)."""

DEFAULT_MAX_BYTES: Final = 64 * 1024
"""``dead_letter_max_bytes`` by default: the most payload bytes kept or shown."""
HTTP: Final = "http"
"""``source.topic`` of what came in over HTTP."""
LATE_FIELD: Final = "occurred_at"
LATE_REASON: Final = "older than the watermark minus the lateness horizon"

# Legacy words, read from data written before the contract (embedded rows, DLQ headers).
_LEGACY_KINDS: Final = {"rejected": "invalid"}


def late_reason(horizon: int) -> str:
    """The reason of a late event, the same on both runners: ``horizon`` is the engine's
    ``lateness_horizon`` (seconds), shown in days too when it is whole days."""
    days = f", {horizon // 86_400} days" if horizon and horizon % 86_400 == 0 else ""
    return f"{LATE_REASON} ({horizon} s{days})"


TOO_OLD_REASON: Final = "older than anything the state keeps"


def too_old_reason(since: int | None) -> str:
    """The reason of a backfilled event the state cannot hold, the same on both runners:
    ``since`` is ``Engine.kept_since`` (epoch seconds), the start of the oldest bucket
    any granularity keeps."""
    if since is None:
        return TOO_OLD_REASON
    return f"{TOO_OLD_REASON} (kept since {iso_utc(since)[:16]}Z)"


def kind_of(word: str | None, field: str | None) -> str:
    """A stored or legacy kind in the contract's words (``rejected`` of old records:
    ``bad_command`` for a control record's field, else ``invalid``)."""
    if word in KINDS:
        return word
    if word in _LEGACY_KINDS:
        return "bad_command" if (field or "").startswith("control.") else "invalid"
    return word or "invalid"


def iso_utc(seconds: float) -> str:
    """``received_at``: epoch seconds as ISO-8601 UTC with milliseconds."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Kept:
    """What is kept of some original bytes: their first ``max_bytes``, size and digest."""

    head: bytes
    size: int
    sha256: str


def keep(data: bytes | None, max_bytes: int, comments: CommentPolicy = "keep") -> Kept:
    """The first ``max_bytes`` of ``data`` with the size and digest of all of it; with a
    comment policy other than ``keep``, of ``data`` :func:`scrubbed` (the size and the
    digest stay the original's)."""
    data = data or b""
    head = data if comments == "keep" else scrubbed(data, comments)
    return Kept(bytes(head[:max_bytes]), len(data), hashlib.sha256(data).hexdigest())


def _scrub_json(value: Any, policy: CommentPolicy) -> Any:
    """``value`` (parsed JSON) with every ``comment`` member as ``policy`` keeps it."""
    if isinstance(value, list):
        return [_scrub_json(v, policy) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, member in value.items():
        if key == "comment" and isinstance(member, str):
            kept = apply_policy(policy, member)
            if kept is not None:
                out[key] = kept
            continue
        out[key] = _scrub_json(member, policy)
    return out


def scrubbed_text(data: bytes) -> bytes:
    """``data`` with its e-mail addresses and phone numbers masked wherever they are
    (bytes that are not UTF-8 stay as they were)."""
    text = bytes(data).decode("utf-8", "surrogateescape")
    masked = redact(text)
    return data if masked == text else masked.encode("utf-8", "surrogateescape")


def scrubbed(data: bytes, comments: CommentPolicy) -> bytes:
    """What a dead letter keeps of ``data`` under the comment policy: ``data`` itself
    with ``keep`` or when there is nothing to change; else JSON with every ``comment``
    member dropped or redacted (the whole re-encoded), or, when ``data`` is not JSON,
    its e-mail addresses and phone numbers masked (bytes that are not UTF-8 stay)."""
    if comments == "keep" or not data:
        return data
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if parsed is None or isinstance(parsed, str):
        return scrubbed_text(data)
    try:
        changed = _scrub_json(parsed, comments)
    except RecursionError:  # nested deeper than Python recurses: mask it as text
        return scrubbed_text(data)
    if changed == parsed:
        return data
    return orjson.dumps(changed)


def source(topic: str | None = None, partition: int | None = None,
           offset: int | None = None, index: int | None = None) -> dict[str, Any]:
    """``source``: every key present, ``None`` where it does not apply."""
    return {"topic": topic, "partition": partition, "offset": offset, "index": index}


def letter(*, kind: str, field: str | None, reason: str | None, received_at: float,
           source: dict[str, Any], kept: Kept, max_bytes: int) -> dict[str, Any]:
    """One dead letter as ``GET /v1/dead-letters`` answers it (module docstring)."""
    head = kept.head[:max_bytes]
    try:
        text = head.decode("utf-8")
        exact: str | None = None
    except UnicodeDecodeError:
        text = head.decode("utf-8", "replace")
        exact = base64.b64encode(head).decode("ascii")
    return {
        "kind": kind_of(kind, field), "field": field, "reason": reason,
        "received_at": iso_utc(received_at), "source": source,
        "size": kept.size, "sha256": kept.sha256, "truncated": kept.size > len(head),
        "payload": text, "payload_base64": exact,
    }


def payload_bytes(item: dict[str, Any]) -> bytes:
    """The kept bytes of an answered dead letter, exactly (the inverse of ``letter``)."""
    exact = item.get("payload_base64")
    return base64.b64decode(exact) if exact is not None else str(item["payload"]).encode()


# -- the original bytes of each event of an HTTP body -----------------------------------

ItemBytes = Callable[[int], bytes]
"""The original bytes of the item at an index of a submitted batch."""


class _Batch(msgspec.Struct):
    events: list[msgspec.Raw] | None = None


_ARRAY: Final = msgspec.json.Decoder(list[msgspec.Raw])
_OBJECT: Final = msgspec.json.Decoder(_Batch)


def split_body(body: bytes, count: int) -> list[bytes] | None:
    """Each event's bytes as they stand in ``body``, a JSON array, ``{"events": [...]}``
    or one event (the body itself), in order; ``None`` when they cannot be told apart
    the way the route parsed the body (``count`` events)."""
    start = body.lstrip()[:1]
    try:
        if start == b"[":
            parts: list[msgspec.Raw] | None = _ARRAY.decode(body)
        elif start == b"{":
            parts = _OBJECT.decode(body).events
            if parts is None:
                return [body] if count == 1 else None
        else:
            return None
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if parts is None or len(parts) != count:
        return None
    return [bytes(p) for p in parts]


class BodyItems:
    """The original bytes of each event of an HTTP body, split only when first asked
    (dead letters are rare: the body is not walked twice for a batch without any)."""

    __slots__ = ("_body", "_items", "_parts", "_split")

    def __init__(self, body: bytes, items: Sequence[Any]) -> None:
        self._body = body
        self._items = items
        self._parts: list[bytes] | None = None
        self._split = False

    def __call__(self, index: int) -> bytes:
        if not self._split:
            self._parts = split_body(self._body, len(self._items))
            self._split = True
        if self._parts is not None:
            return self._parts[index]
        return reencoded(self._items[index])


def reencoded(item: object) -> bytes:
    """The JSON of an item that came without its bytes (a Python caller's object; its
    ``repr`` when it is not JSON-serializable)."""
    try:
        return orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return repr(item).encode("utf-8", errors="replace")


def original(items: Sequence[Any], raw: ItemBytes | None, index: int) -> bytes:
    """The bytes item ``index`` was received as (re-encoded without ``raw``)."""
    return raw(index) if raw is not None else reencoded(items[index])
