"""benchmarks/bench_memory.py keeps working: a --quick run, its tables parsed.

Not a timed test: it checks every table prints, its figures parse, peak RSS grows
with what is added, and the customer book stays compact (the columnar layout costs
about 250 bytes a customer; one Python object per customer cost about 480).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "bench_memory.py"
ROW = re.compile(r"^\s+(baseline|[\d,]+)\s+([\d.]+)\s")


def tables(output: str) -> dict[str, list[tuple[str, float, list[str]]]]:
    """Section letter -> rows of (first column, peak RSS MiB, every column)."""
    found: dict[str, list[tuple[str, float, list[str]]]] = {}
    section = None
    for line in output.splitlines():
        title = re.match(r"^\(([a-z])\) ", line)
        if title:
            section = title.group(1)
            found[section] = []
            continue
        row = ROW.match(line)
        if section and row:
            found[section].append((row.group(1), float(row.group(2)), line.split()))
    return found


def count(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.slow
def test_bench_memory_quick_run() -> None:
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(SCRIPT), "--quick"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = tables(result.stdout)
    assert sorted(out) == ["a", "b", "c", "d", "e"], result.stdout
    # (e) the dedupe memory: the set and the two tiers side by side, 8 B/id snapshots
    dedupe = [line.split() for line in result.stdout.split("\n(e) ")[1].splitlines()
              if " set " in line or " two-tier " in line]
    assert [row[2] for row in dedupe] == ["set", "two-tier"], result.stdout
    assert all(count(row[1]) == 35_000 and 8 <= float(row[7]) < 9 for row in dedupe)
    del out["e"]
    for section, rows in out.items():
        assert rows[0][0] == "baseline", (section, result.stdout)
        base = rows[0][1]
        assert 10 < base < 500, (section, base)  # an interpreter with numpy, not empty
        peaks = [peak for _, peak, _ in rows[1:]]
        assert peaks, (section, result.stdout)
        assert all(peak >= base for peak in peaks), (section, result.stdout)
        assert peaks == sorted(peaks), (section, result.stdout)  # grows with the size

    customers = out["a"]
    assert [count(first) for first, _, _ in customers[1:]] == [1_000, 10_000]
    assert customers[2][1] > customers[1][1] > customers[0][1]
    for _, _, columns in customers[1:]:
        assert count(columns[3]) > 0  # bytes per customer
        assert "snapshot" in " ".join(columns)
    series = [count(first) for first, _, _ in out["b"][1:]]
    assert series == [8, 92]  # V^2 + 3V + 4 with V = 1, 8: no value folded into "other"

    (_, _, book), = out["c"][1:]
    assert count(book[0]) == 100_000
    assert 60 < count(book[3]) < 400, result.stdout  # bytes per customer in the book
    (_, _, journeys), = out["d"][1:]
    assert count(journeys[3]) > 100  # bytes per open journey
