"""The API under abuse: oversize bodies, huge batches, deep pagination, bad keys, a burst.

Nothing here may answer 5xx; every refusal says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from faults_support import JSON, READ, WRITE, auth, event, still_serving

MB = 1024 * 1024


async def test_an_oversize_declared_body_is_refused_before_it_is_read(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/events", content=b"[" + b" " * (9 * MB) + b"]",
                                 headers={**auth(), **JSON})
    assert response.status_code == 413
    assert response.json()["detail"]["reason"] == "request body over 8388608 bytes"


async def test_an_oversize_chunked_body_without_length_is_refused(
    client: httpx.AsyncClient,
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"events": ["'
        for _ in range(40):  # 40 x 256 KiB = 10 MiB, past the 8 MiB cap
            sent += 1
            yield b"x" * (256 * 1024)
        yield b'"]}'

    response = await client.post("/v1/events", content=chunks(),
                                 headers={**auth(), **JSON})
    assert "content-length" not in response.request.headers
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert "request body over" in response.json()["detail"]["reason"]
    await still_serving(client, 1)


async def test_huge_batches(client: httpx.AsyncClient) -> None:
    at_cap = [event(i % 300, event_id=f"cap-{i}") for i in range(10_000)]
    ok = await client.post("/v1/events", json=at_cap, headers=auth())
    assert ok.status_code == 200 and ok.json()["accepted"] == 10_000
    over = await client.post("/v1/events", json={"events": at_cap + [event(1)]},
                             headers=auth())
    assert over.status_code == 413
    assert "10001 events; at most 10000" in over.json()["detail"]["reason"]


@pytest.mark.parametrize("path", [
    "/v1/dead-letters?offset=10000000",
    "/v1/scores?scope=channel&window=24h&offset=10000000",
])
async def test_deep_pagination_is_an_empty_page(client: httpx.AsyncClient, path: str) -> None:
    await client.post("/v1/events", json=[event(i) for i in range(5)] + [{"bad": 1}],
                      headers=auth())
    response = await client.get(path, headers=auth(READ))
    assert response.status_code == 200
    assert response.json()["items"] == []


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/dead-letters?limit=1001", "query.limit"),
    ("/v1/dead-letters?limit=0", "query.limit"),
    ("/v1/dead-letters?offset=10000001", "query.offset"),
    ("/v1/dead-letters?offset=-1", "query.offset"),
    ("/v1/dead-letters?limit=abc", "query.limit"),
    ("/v1/scores?limit=10001", "query.limit"),
    ("/v1/scores?offset=99999999999999999999999", "query.offset"),
])
async def test_limits_out_of_range_are_422_with_the_field(
    client: httpx.AsyncClient, path: str, field: str,
) -> None:
    response = await client.get(path, headers=auth(READ))
    assert response.status_code == 422, response.text
    assert field in {d["field"] for d in response.json()["detail"]}


BAD_AUTH: list[tuple[str, dict[str, str]]] = [
    ("missing", {}),
    ("Bearer without a key", {"Authorization": "Bearer"}),
    ("Bearer and spaces", {"Authorization": "Bearer    "}),
    ("Basic credentials", {"Authorization": "Basic d3JpdGVyOnNlY3JldA=="}),
    ("wrong key", {"Authorization": "Bearer not-a-key-0123456789"}),
    ("key without scheme", {"Authorization": WRITE}),
    ("10 KB header", {"Authorization": "Bearer " + "k" * 10_240}),
    ("latin-1 bytes in the key", {"Authorization": "Bearer clé-ünïcødé"}),
    ("empty X-Api-Key", {"X-Api-Key": ""}),
    ("wrong X-Api-Key", {"X-Api-Key": "x" * 4096}),
]


@pytest.mark.parametrize("headers", [c[1] for c in BAD_AUTH], ids=[c[0] for c in BAD_AUTH])
@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/events"), ("GET", "/v1/scores"), ("GET", "/v1/dead-letters"),
])
async def test_bad_credentials_are_401_not_500(
    client: httpx.AsyncClient, headers: dict[str, str], method: str, path: str,
) -> None:
    encoded = {k: v.encode("latin-1") for k, v in headers.items()}
    response = await client.request(method, path, headers=encoded,
                                    json=[event(1)] if method == "POST" else None)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key is required" in response.json()["detail"]


async def test_a_read_key_cannot_write(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", json=event(1), headers=auth(READ))
    assert response.status_code == 403


async def test_a_burst_of_500_concurrent_requests_gets_no_5xx(
    client: httpx.AsyncClient, app: Any,
) -> None:
    def request(i: int) -> Any:
        kind = i % 5
        if kind == 0:
            return client.post("/v1/events", json=[event(i, event_id=f"burst-{i}")],
                               headers=auth())
        if kind == 1:
            return client.post("/v1/events", content=b"{broken", headers={**auth(), **JSON})
        if kind == 2:
            return client.get("/v1/scores?scope=channel&window=24h", headers=auth(READ))
        if kind == 3:
            return client.get("/v1/dead-letters?limit=5", headers=auth(READ))
        return client.get("/metrics")

    responses = await asyncio.gather(*(request(i) for i in range(500)))
    statuses = [r.status_code for r in responses]
    assert not [s for s in statuses if s >= 500]
    assert statuses.count(200) == 400 and statuses.count(400) == 100
    accepted = sum(r.json()["accepted"] for i, r in enumerate(responses) if i % 5 == 0)
    assert accepted == 100
    await still_serving(client, 2)
