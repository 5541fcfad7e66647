"""The ``erase`` command (issue 21, item 1): its payload codec, the digest of the audit
trail, its application to an engine, and the follow-ups' personal fields blanked."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from schemas.decode import EventDecoder
from streams.detection import (
    ERASED_FIELDS,
    FollowUp,
    FollowUpBook,
    FollowUpUpdate,
    is_scrubbed,
    scrubbed,
)
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine, Erased
from streams.engine.pulses import PulseError
from streams.runner import (
    COMMANDS,
    ERASE,
    ErasureReport,
    ErasureRequest,
    apply_command,
    decode_erase,
    encode_erase,
    erasure_digest,
)

CUSTOMER = "kúnni-Þórunn-客户-7"
AT = datetime(2026, 1, 7, 15, 4, 5, 123456, tzinfo=UTC)


def test_the_payload_is_json_with_the_id_its_digest_who_and_when() -> None:
    request = ErasureRequest.new(CUSTOMER, "dpo", b"k3y",
                                 AT.astimezone(timezone(timedelta(hours=2))))
    payload = encode_erase(request)
    assert msgspec.json.decode(payload) == {
        "customer_id": CUSTOMER, "by": "dpo", "at": "2026-01-07T15:04:05.123456+00:00",
        "digest": "hmac-sha256:" + hmac.new(b"k3y", CUSTOMER.encode(), hashlib.sha256
                                            ).hexdigest()}
    assert decode_erase(payload) == request
    assert ERASE == "erase" and ERASE in COMMANDS
    redacted = request.redacted()
    assert redacted.customer_id is None and redacted.digest == request.digest
    assert CUSTOMER.encode() not in encode_erase(redacted)
    assert decode_erase(encode_erase(redacted)) == redacted
    report = ErasureReport.of(request, "erased", {"customers": 1})
    assert report.to_dict() == {"digest": request.digest, "by": "dpo", "at": request.at,
                                "state": "erased", "removed": {"customers": 1}}


def test_the_digest_is_keyed_when_a_key_is_set() -> None:
    plain = erasure_digest(CUSTOMER, None)
    assert plain == "sha256:" + hashlib.sha256(CUSTOMER.encode()).hexdigest()
    assert erasure_digest(CUSTOMER, b"") == plain
    keyed = erasure_digest(CUSTOMER, b"one")
    assert keyed.startswith("hmac-sha256:") and keyed != erasure_digest(CUSTOMER, b"two")
    assert keyed == erasure_digest(CUSTOMER, b"one")


@pytest.mark.parametrize(("payload", "field"), [
    (b"not json", "erase"),
    (b"{}", "erase"),
    (b'{"customer_id": 7, "digest": "d", "by": "b", "at": "t"}', "erase"),
    (b'{"customer_id": "", "digest": "d", "by": "b", "at": "t"}', "erase.customer_id"),
])
def test_a_bad_payload_names_what_is_wrong(payload: bytes, field: str) -> None:
    with pytest.raises(PulseError) as caught:
        apply_command(Engine(EngineConfig()), ERASE, payload)
    assert caught.value.field == field


def test_applied_it_erases_once_and_a_redacted_one_is_a_no_op() -> None:
    engine = Engine(EngineConfig(scopes=((),)))
    engine.ingest([EventDecoder().convert({
        "event_id": "e-1", "occurred_at": AT.isoformat(), "customer_id": CUSTOMER,
        "touchpoint": "call", "channel": "phone", "kind": "csat", "value": 2,
        "journey_id": "j-1", "comment": "Jón, +354 555 1234"})])
    request = ErasureRequest.new(CUSTOMER, "dpo", None, AT)
    assert apply_command(engine, ERASE, encode_erase(request.redacted())) == Erased()
    assert engine.customers.get(CUSTOMER) is not None
    assert apply_command(engine, ERASE, encode_erase(request)) == Erased(1, 1)
    assert apply_command(engine, ERASE, encode_erase(request)) == Erased()
    assert CUSTOMER.encode() not in engine.snapshot()


def _followup(i: int, customer: str) -> FollowUp:
    return FollowUp(f"f-{i}", "detractors", f"e-{i}", customer, f"j-{i}", "smb", "chat",
                    "survey", "detractor: nps 3", "support", 1_700_000_000 + i)


def test_followups_keep_their_anonymous_rest() -> None:
    book = FollowUpBook(closed_kept=10)
    book.add([_followup(i, CUSTOMER if i % 2 else "other") for i in range(6)])
    book.apply(FollowUpUpdate("f-1", "close", "agent", "called Þórunn back", 1_700_000_100))
    book.apply(FollowUpUpdate("f-3", "assign", "lead", "ring her", 1_700_000_200, "kim"))
    before = {f.id: f.to_dict() for f in book.list()}

    changed = book.erase_customer(CUSTOMER)

    assert sorted(f.id for f in changed) == ["f-1", "f-3", "f-5"]
    for item in book.list():
        now, was = item.to_dict(), before[item.id]
        if was["customer_id"] == CUSTOMER:
            assert is_scrubbed(item)
            assert {k: v for k, v in now.items() if k not in ERASED_FIELDS} == \
                {k: v for k, v in was.items() if k not in ERASED_FIELDS}
        else:
            assert now == was and not is_scrubbed(item)
    assert book.get("f-1").status == "closed"  # type: ignore[union-attr]
    assert book.get("f-3").assignee == "kim"  # type: ignore[union-attr]
    assert CUSTOMER.encode() not in msgspec.msgpack.encode(book.state())
    assert b"\xc3\x9e" not in msgspec.msgpack.encode(book.state())  # Þ of the note
    assert book.erase_customer(CUSTOMER) == []
    assert scrubbed(_followup(9, CUSTOMER)).to_dict() | {"id": "f-1"} == {
        **_followup(9, CUSTOMER).to_dict(), "id": "f-1", "customer_id": "",
        "event_id": "", "journey_id": None, "note": None}
