"""CloudEvents 1.0 in: an event in a CloudEvents envelope, mapped to the event contract.

The mapping (the inverse of ``to_cloudevent``): ``id`` is ``event_id``, ``time`` is
``occurred_at``, ``subject`` is ``customer_id``, ``source`` is ``source``; ``type``
names the signal — ``io.touchstream.touchpoint.v1`` with ``kind`` in the data, or
``io.touchstream.<kind>.v1`` (``io.touchstream.csat.v1``) — and the other fields of the
event are the JSON object ``data``. An attribute and a data field that both say
something must say the same thing. The result is an event object for the decoder,
which then judges it as any other.

Used by the HTTP binding (structured ``application/cloudevents+json``, batched
``application/cloudevents-batch+json``, binary with ``ce-*`` headers) and the Kafka
binding (``from_kafka``: structured, or binary with ``ce_*`` headers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import orjson

from schemas.decode import EventError
from schemas.event import CLOUDEVENT_TYPE, KINDS

MAPPING: Final = (
    "As a CloudEvent (1.0): id is event_id, time is occurred_at, subject is customer_id, "
    "source is source; type is io.touchstream.touchpoint.v1 (kind in data) or "
    "io.touchstream.<kind>.v1; data (application/json) holds the other fields. Over HTTP: "
    "structured (application/cloudevents+json), batched "
    "(application/cloudevents-batch+json) or binary (ce-* headers); on the Kafka input "
    "topic: binary (ce_* headers) or structured.")
"""The mapping, as the published JSON Schema's description says it."""
STRUCTURED: Final = "application/cloudevents+json"
BATCH: Final = "application/cloudevents-batch+json"
SPECVERSION: Final = "1.0"
_PREFIX: Final = "io.touchstream."
_ATTRIBUTES: Final = (("id", "event_id"), ("time", "occurred_at"), ("subject", "customer_id"),
                      ("source", "source"))
"""Context attributes that are fields of the event."""


def _kind_of(ce_type: object) -> str | None:
    """The signal a ``type`` names: None for the generic touchpoint type (the kind is in
    the data); EventError for a type that is not ours."""
    if not isinstance(ce_type, str) or not ce_type:
        raise EventError("type", "is required")
    if ce_type == CLOUDEVENT_TYPE:
        return None
    name = ce_type.removeprefix(_PREFIX).removesuffix(".v1")
    if ce_type.startswith(_PREFIX) and name in KINDS:
        return name
    raise EventError("type", f"not a touchstream event type: {ce_type!r} (expected "
                             f"{CLOUDEVENT_TYPE} or {_PREFIX}<kind>.v1, kind one of "
                             f"{', '.join(KINDS)})")


def _same(attribute: str, ours: Any, theirs: Any) -> bool:
    if attribute == "time" and isinstance(ours, str) and isinstance(theirs, str):
        try:
            return datetime.fromisoformat(ours) == datetime.fromisoformat(theirs)
        except ValueError:
            return False
    return bool(ours == theirs)


def to_event(attributes: Mapping[str, Any], data: object) -> dict[str, Any]:
    """The event object of a CloudEvent given by its context ``attributes`` and ``data``.

    Raises ``EventError`` naming the attribute (``specversion``, ``type``, ``id``,
    ``data``, ...) when the envelope cannot carry a touchstream event.
    """
    version = attributes.get("specversion")
    if version != SPECVERSION:
        raise EventError("specversion", "is required" if version is None
                         else f"must be {SPECVERSION!r}, not {version!r}")
    kind = _kind_of(attributes.get("type"))
    content_type = attributes.get("datacontenttype")
    if content_type is not None and (not isinstance(content_type, str) or
                                     content_type.split(";")[0].strip().lower()
                                     not in ("application/json", "text/json")):
        raise EventError("datacontenttype", f"must be application/json, not {content_type!r}")
    if data is None:
        raise EventError("data", "is required: the event's fields as a JSON object"
                         if "data_base64" not in attributes
                         else "data_base64 is not read: send the fields as JSON data")
    if not isinstance(data, dict):
        raise EventError("data", "must be a JSON object of the event's fields")
    event = dict(data)
    for attribute, name in _ATTRIBUTES:
        value = attributes.get(attribute)
        if value is None:
            continue
        if name in event and not _same(attribute, value, event[name]):
            raise EventError(attribute, f"says {value!r} but data.{name} says "
                                        f"{event[name]!r}")
        event[name] = value
    if kind is not None:
        if "kind" in event and event["kind"] != kind:
            raise EventError("type", f"names {kind} but data.kind is {event['kind']!r}")
        event["kind"] = kind
    return event


def from_structured(envelope: object) -> dict[str, Any]:
    """The event of a structured-mode CloudEvent (its JSON object)."""
    if not isinstance(envelope, dict):
        raise EventError("$", "a CloudEvent is a JSON object")
    return to_event(envelope, envelope.get("data"))


def binary_attributes(headers: Mapping[str, str], prefix: str) -> dict[str, str]:
    """Context attributes from binary-mode headers (``ce-`` over HTTP, ``ce_`` on
    Kafka), names in lower case; the content type is ``datacontenttype``."""
    found = {name.lower()[len(prefix):]: value for name, value in headers.items()
             if name.lower().startswith(prefix)}
    content_type = headers.get("content-type") or headers.get("Content-Type")
    if content_type is not None:
        found.setdefault("datacontenttype", content_type)
    return found


def from_kafka(headers: Sequence[tuple[str, bytes]], value: bytes | None) -> bytes | None:
    """The event JSON of a Kafka record in the CloudEvents Kafka protocol binding, or
    None when the record is not a CloudEvent: binary (``ce_*`` headers, the data as the
    value) or structured (the whole CloudEvent as the value; ``content-type:
    application/cloudevents+json``, or any JSON object with a ``specversion``). Raises
    ``EventError`` naming the attribute when it cannot carry an event."""
    named = {name.lower(): bytes(raw).decode("utf-8", "replace") for name, raw in headers}
    content_type = named.get("content-type", "").split(";")[0].strip().lower()
    if "ce_specversion" in named:
        try:
            data = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            raise EventError("data", f"not valid JSON ({exc})") from None
        attributes = {name[3:]: text for name, text in named.items() if name.startswith("ce_")}
        if content_type:
            attributes.setdefault("datacontenttype", content_type)
        return orjson.dumps(to_event(attributes, data))
    if content_type != STRUCTURED and (value is None or b'"specversion"' not in value):
        return None
    try:
        envelope = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        if content_type == STRUCTURED:
            raise EventError("$", f"not valid JSON ({exc})") from None
        return None
    if content_type != STRUCTURED and not (isinstance(envelope, dict)
                                           and "specversion" in envelope):
        return None
    return orjson.dumps(from_structured(envelope))
