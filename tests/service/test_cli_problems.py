"""``touchstream score`` lists every problem of each rejected line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service import cli


def test_score_lists_every_problem_of_a_rejected_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    good = {"event_id": "e-1", "occurred_at": at, "customer_id": "c-1",
            "touchpoint": "support", "channel": "chat", "kind": "csat", "value": 5}
    broken = {**good, "event_id": "e-2", "value": 9, "occurred_at": "yesterday"}
    del broken["customer_id"]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in (good, broken, {**good, "value": "5"}))
                    + "\n")
    cli.score_command(path, window="7d", scope="")
    lines = capsys.readouterr().out.splitlines()
    assert "events: accepted 1, late 0, duplicates 0, rejected 2" in lines
    assert lines[-2:] == [
        "  rejected line 2: value: Expected `int` <= 5; occurred_at: Invalid RFC3339 "
        "encoded datetime; customer_id: is required",
        "  rejected line 3: value: Expected `int`, got `str`",
    ]
