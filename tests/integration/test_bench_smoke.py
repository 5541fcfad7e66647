"""The Kafka benchmark scripts keep working: --quick runs against the session's broker.

Not timed tests: they check that bench_pipeline.py runs every contender and prints a
line for each, and that bench_latency.py measures latencies that are positive and
finite, not what the figures are.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "bench_pipeline.py"
LATENCY_SCRIPT = REPO_ROOT / "benchmarks" / "bench_latency.py"

CONTENDERS = ("1 ceiling", "2 faust", "3 touchstream worker x1", "3 touchstream worker x2",
              "4 embedded")


@pytest.mark.integration
@pytest.mark.slow
def test_bench_pipeline_quick_run(kafka_bootstrap: str) -> None:
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(SCRIPT), "--quick", "--bootstrap", kafka_bootstrap],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "events/s" in result.stdout
    lines = result.stdout.splitlines()
    for contender in CONTENDERS:
        found = [line for line in lines if line.strip().startswith(contender)]
        assert found, f"no line for {contender!r} in:\n{result.stdout}"
    # Each contender is measured right after a ceiling run of its own.
    rows = [line.strip() for line in lines if line.strip()[:2] in {"1 ", "2 ", "3 ", "4 "}]
    for before, row in itertools.pairwise(rows):
        if not row.startswith("1 ceiling"):
            assert before.startswith("1 ceiling"), result.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_bench_pipeline_repeated_rounds_print_medians(kafka_bootstrap: str) -> None:
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(SCRIPT), "--quick", "--repeat", "2", "--only", "worker1",
         "--bootstrap", kafka_bootstrap],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "round 2 of 2" in out and "medians of 2 rounds" in out, out
    medians = out.split("medians of 2 rounds")[1].splitlines()
    worker = [line for line in medians if line.strip().startswith("3 touchstream worker x1")]
    assert worker, out
    assert not [line for line in out.splitlines() if line.strip().startswith("2 faust")], out
    assert "worker 0 (whole run): records=" in out, out


@pytest.mark.integration
@pytest.mark.slow
def test_bench_latency_quick_run(kafka_bootstrap: str) -> None:
    # The product's defaults, whatever TOUCHSTREAM_* the caller's shell has.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(LATENCY_SCRIPT), "--quick", "--json", "--bootstrap",
         kafka_bootstrap],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=170, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "horizontal distance" in result.stdout  # the definition is stated
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["settings"]["flush_interval"] > 0
    assert report["rates"], result.stdout
    for row in report["rates"]:
        assert row["events"] > 0 and row["never_visible"] == 0, row
        assert row["achieved"] > 0.8 * row["rate"], row
        figures = [row[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
        assert all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in figures), row
        assert figures == sorted(figures), row
        table = [line for line in result.stdout.splitlines()
                 if line.split()[:1] == [f"{row['rate']:,.0f}"]]
        assert table, f"no table line for {row['rate']:,.0f}/s in:\n{result.stdout}"


@pytest.mark.integration
@pytest.mark.slow
def test_bench_worker_small_run(kafka_bootstrap: str) -> None:
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_worker.py"), "--bootstrap",
         kafka_bootstrap, "--passengers", "5000"],  # 75,000 events: several flushes
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    worker = [line for line in result.stdout.splitlines()
              if line.strip().startswith("one worker (end to end)")]
    assert worker, result.stdout
    rate = float(worker[0].split()[5].replace(",", ""))
    assert rate > 0 and "us CPU/event" in worker[0]
