"""CloudEvents in over HTTP: events sent with the official SDK in all three modes are
counted; a CloudEvent that is not counted says why (400 alone, per event in a batch)
and is kept as a dead letter as it was sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cloudevents.conversion import to_binary, to_dict, to_structured
from cloudevents.http import CloudEvent
from service_support import READ, WRITE, auth

from schemas import EventDecoder, to_cloudevent
from schemas.cloudevents import from_structured, to_event
from schemas.decode import EventError

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)


def cloud_event(i: int, kind: str = "csat", value: Any = 4, **data: Any) -> CloudEvent:
    attributes = {"type": f"io.touchstream.{kind}.v1", "source": "/surveys/email",
                  "id": f"ce-{i}", "subject": f"cus-{i % 5}",
                  "time": (NOW + timedelta(seconds=i)).isoformat()}
    return CloudEvent(attributes, {"touchpoint": "support", "channel": "email",
                                   "value": value, **data})


async def csat_n(client: httpx.AsyncClient) -> int:
    items = (await client.get("/v1/scores", params={"window": "1h", "metric": "csat"},
                              headers=auth(READ))).json()["items"]
    return int(items[0]["n"]) if items else 0


async def test_the_sdks_three_http_modes_are_counted(client: httpx.AsyncClient) -> None:
    headers, body = to_structured(cloud_event(1))
    answer = await client.post("/v1/events", content=body, headers={**headers, **auth(WRITE)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1

    headers, body = to_binary(cloud_event(2))
    answer = await client.post("/v1/events", content=body,
                               headers={**headers, "content-type": "application/json",
                                        **auth(WRITE)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["event_id"] == "ce-2"

    batch = json.dumps([to_dict(cloud_event(i)) for i in range(3, 8)]).encode()
    answer = await client.post("/v1/events", content=batch, headers={
        "content-type": "application/cloudevents-batch+json", **auth(WRITE)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 5
    assert await csat_n(client) == 7

    # The same CloudEvent again is a duplicate (id is event_id), in any mode.
    headers, body = to_binary(cloud_event(2))
    again = await client.post("/v1/events", content=body, headers={**headers, **auth(WRITE)})
    assert again.json()["duplicates"] == 1
    # The attributes became the event's fields: subject is the customer.
    customer = await client.get("/v1/customers/cus-1", headers=auth(READ))
    assert customer.status_code == 200, customer.text


async def test_a_refused_cloudevent_says_why_and_is_kept(client: httpx.AsyncClient) -> None:
    headers, body = to_structured(cloud_event(1, value=9))  # csat is 1..5
    answer = await client.post("/v1/events", content=body, headers={**headers, **auth(WRITE)})
    assert answer.status_code == 400
    assert answer.json()["detail"]["field"] == "value"

    wrong_version = {**to_dict(cloud_event(2)), "specversion": "0.3"}
    unknown_type = {**to_dict(cloud_event(3)), "type": "com.example.order.created"}
    batch = [to_dict(cloud_event(4)), wrong_version, unknown_type]
    answer = await client.post("/v1/events", content=json.dumps(batch).encode(), headers={
        "content-type": "application/cloudevents-batch+json", **auth(WRITE)})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected"]
    assert (results[1]["field"], results[2]["field"]) == ("specversion", "type")
    assert "0.3" in results[1]["reason"] and results[2]["problems"][0]["field"] == "type"

    not_json = await client.post("/v1/events", content=b"{nope", headers={
        "content-type": "application/cloudevents+json", **auth(WRITE)})
    assert not_json.status_code == 400

    letters = (await client.get("/v1/dead-letters", params={"limit": 10},
                                headers=auth(READ))).json()["items"]
    payloads = [letter["payload"] for letter in letters]
    assert body.decode() in payloads  # the structured CloudEvent, as it was sent
    assert any('"specversion": "0.3"' in p for p in payloads)
    assert "{nope" in payloads


def test_the_mapping_is_the_inverse_of_to_cloudevent() -> None:
    decoder = EventDecoder()
    event = decoder.convert({"event_id": "e-1", "occurred_at": NOW.isoformat(),
                             "customer_id": "c-1", "touchpoint": "support",
                             "channel": "chat", "kind": "nps", "value": 9,
                             "comment": "Þakka þér — متشکرم — ευχαριστώ"})
    assert decoder.convert(from_structured(to_cloudevent(event))) == event


@pytest.mark.parametrize(("attributes", "data", "field"), [
    ({"type": "io.touchstream.csat.v1", "id": "a"}, {"value": 4}, "specversion"),
    ({"specversion": "1.0", "id": "a"}, {"value": 4}, "type"),
    ({"specversion": "1.0", "type": "io.touchstream.csat.v1"}, None, "data"),
    ({"specversion": "1.0", "type": "io.touchstream.csat.v1"}, [1], "data"),
    ({"specversion": "1.0", "type": "io.touchstream.csat.v1", "id": "a"},
     {"event_id": "b"}, "id"),
    ({"specversion": "1.0", "type": "io.touchstream.csat.v1", "datacontenttype": "text/xml"},
     {}, "datacontenttype"),
    ({"specversion": "1.0", "type": "io.touchstream.csat.v1"}, {"kind": "nps"}, "type"),
])
def test_envelope_problems_name_the_attribute(attributes: dict[str, Any], data: Any,
                                              field: str) -> None:
    with pytest.raises(EventError) as caught:
        to_event(attributes, data)
    assert caught.value.field == field
