"""Pulse studies seeded from the state, over HTTP on the embedded runner (issue 18,
item 3): a baseline in the past counts the answers already in the state when the filter
is a configured scope, says ``live only`` and why when it is not, and a replay of the
command log after a crash seeds the same."""

from __future__ import annotations

import gc
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from service_support import ADMIN, CONFIG, NOW, READ, WRITE, auth, event

from streams.embedded import EmbeddedRunner
from streams.runner import PulseRequest

DAY = timedelta(days=1)
HOUR0 = NOW.replace(minute=0, second=0)
BASELINE_START = HOUR0 - 4 * DAY


def past(i: int, hours_ago: float, **fields: Any) -> dict[str, Any]:
    """A valid event ``hours_ago`` before NOW (within the 35-day horizon)."""
    return event(i, occurred_at=(NOW - timedelta(hours=hours_ago)).isoformat(), **fields)


HISTORY = [
    *(past(i, 90 - i, channel="chat", value=5 if i % 3 else 2) for i in range(12)),
    *(past(100 + i, 80 - i, channel="phone", value=1) for i in range(5)),
    past(200, 120, channel="chat", value=1),  # before the baseline: not in it
]


def study(pulse_id: str, filter_: dict[str, list[str]]) -> dict[str, Any]:
    return {"pulse_id": pulse_id, "name": pulse_id, "filter": filter_,
            "start": NOW.isoformat(), "end": (NOW + 7 * DAY).isoformat(),
            "baseline_start": BASELINE_START.isoformat(),
            "baseline_end": (BASELINE_START + 3 * DAY).isoformat()}


async def post(client: httpx.AsyncClient, items: list[dict[str, Any]]) -> None:
    answer = await client.post("/v1/events", json=items, headers=auth(WRITE))
    assert answer.status_code in (200, 202), answer.text


def baseline(answer: dict[str, Any], metric: str = "csat") -> dict[str, Any]:
    (found,) = [r for r in answer["results"] if r["metric"] == metric]
    return dict(found["baseline"])


async def test_a_scope_filter_counts_the_state_and_says_so(client: httpx.AsyncClient) -> None:
    await post(client, HISTORY)
    created = await client.post("/v1/pulses", json=study("chat", {"channel": ["chat"]}),
                                headers=auth(ADMIN))
    assert created.status_code == 201
    got = created.json()
    # The 12 chat answers 90..79 h ago are in [NOW - 4 days, NOW - 1 day): 8 top-box.
    assert (baseline(got)["n"], baseline(got)["value"]) == (12, 8 / 12)
    assert got["baseline_source"] == "state" and got["baseline_note"] is None
    assert got["study_source"] == "state"
    assert got["counted"]["baseline"] == {
        "start": BASELINE_START.isoformat().replace("+00:00", "Z"),
        "end": (BASELINE_START + 3 * DAY).isoformat().replace("+00:00", "Z"),
        "granularity": "3600s", "tail_granularity": None, "exact": True}
    # A late answer whose time lies in the baseline, after the start: counts once;
    # a resend of one already counted: a duplicate.
    await post(client, [past(300, 50, channel="chat", value=5), HISTORY[0]])
    again = (await client.get("/v1/pulses/chat", headers=auth(READ))).json()
    assert baseline(again)["n"] == 13
    listed = (await client.get("/v1/pulses", headers=auth(READ))).json()
    assert listed["items"][0]["baseline_source"] == "state"


async def test_a_filter_that_is_not_a_scope_says_live_only(client: httpx.AsyncClient) -> None:
    await post(client, HISTORY)
    created = await client.post("/v1/pulses", json=study("tp", {"touchpoint": ["support"]}),
                                headers=auth(ADMIN))
    got = created.json()
    assert created.status_code == 201 and got["results"] == []
    assert got["baseline_source"] == got["study_source"] == "live only"
    assert "not a configured scope" in got["baseline_note"]
    assert "only answers that arrive after it started" in got["baseline_note"]
    assert got["counted"]["baseline"]["granularity"] is None


def test_a_replay_after_a_crash_seeds_the_same(tmp_path: Path) -> None:
    request = PulseRequest("chat", "chat", {"channel": ["chat"]},
                           int(NOW.timestamp()), int((NOW + 7 * DAY).timestamp()),
                           int(BASELINE_START.timestamp()),
                           int((BASELINE_START + 3 * DAY).timestamp()))
    first = EmbeddedRunner(tmp_path, CONFIG)
    first.open()
    first.submit_blocking(HISTORY)
    first.start_pulse_blocking(request)
    first.submit_blocking([past(300, 50, channel="chat", value=5)])
    before = first.read_blocking(lambda e: e.pulses["chat"].state())
    assert first.stats()["snapshots"] == 0
    del first
    gc.collect()  # a crash: no final snapshot, the log alone carries the state
    with EmbeddedRunner(tmp_path, CONFIG) as again:
        after = again.read_blocking(lambda e: e.pulses["chat"].state())
    assert after == before
    assert after["seeds"]["baseline"][0] == "state"
    assert after["baseline"]["csat"][:8] == before["baseline"]["csat"][:8]
