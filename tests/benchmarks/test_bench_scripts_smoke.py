"""The in-process benchmark scripts keep working: a tiny run of each, its figures parsed.

Not timed tests: they check that each script runs to the end with small inputs and
prints every figure it promises as a positive number, not what the figures are.
(The Kafka ones, bench_pipeline, bench_latency and bench_worker, run in
tests/integration/test_bench_smoke.py against the session's broker.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"([\d,]+(?:\.\d+)?)"


def run(script: str, *args: str) -> str:
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def figure(output: str, pattern: str) -> float:
    found = re.search(pattern, output, re.MULTILINE)
    assert found, f"no match for {pattern!r} in:\n{output}"
    value = float(found.group(1).replace(",", ""))
    assert value > 0, f"{pattern!r} gave {value}"
    return value


def test_bench_decode() -> None:
    out = run("bench_decode.py", "--events", "2000")
    figure(out, r"^touchstream EventDecoder \(msgspec\)\s+" + NUMBER + r" µs/event")
    figure(out, r"^orjson\.loads \+ EventDecoder\.convert\s+" + NUMBER + r" µs/event")


def test_bench_engine() -> None:
    out = run("bench_engine.py", "--passengers", "300", "--batch", "500")
    figure(out, r"^engine ingest only\s+" + NUMBER + " events/s")
    figure(out, r"^decode \+ ingest\s+" + NUMBER + " events/s")


def test_bench_embedded(tmp_path: Path) -> None:
    out = run("bench_embedded.py", "--events", "2000", "--batch", "500",
              "--dir", str(tmp_path))
    figure(out, r"^\s+submit, snapshots off\s+" + NUMBER + " events/s")
    figure(out, r"^\s+recover 2,000 logged events \(replay\)\s+" + NUMBER + " s")


@pytest.mark.slow
def test_bench_api() -> None:
    out = run("bench_api.py", "--seconds", "1", "--batch", "100")
    for line in ("GET /v1/scores @ 20/s", "POST 100 events @ 10/s"):
        row = re.search(re.escape(line) + r".*p50\s+" + NUMBER + r" ms\s+p99\s+" + NUMBER
                        + r" ms\s+errors (\d+)", out)
        assert row, f"no line for {line!r} in:\n{out}"
        p50, p99 = float(row.group(1)), float(row.group(2))
        assert 0 < p50 <= p99 and row.group(3) == "0"


def test_bench_instructions() -> None:
    if shutil.which("valgrind") is None:
        assert os.environ.get("CI") != "true", "valgrind missing (apt-get install valgrind)"
        pytest.skip("valgrind not installed (apt-get install valgrind)")
    # Enough events that the figure outweighs the noise of two whole interpreter runs
    # (300 once gave a negative difference).
    out = run("bench_instructions.py", "--events", "3000", "--warm", "300")
    figure(out, r"^  working tree\s+" + NUMBER + " instructions/event")


def test_bench_detection() -> None:
    out = run("bench_detection.py", "--quick")
    figure(out, r"^bench_detection: \d+ runs in \d+ s; " + NUMBER + " ms per evaluation")
    figure(out, r"^evaluate\(\) with [\d,]+ series: current " + NUMBER + " ms")
    figure(out, r"^the event loop's longest pause .* inline " + NUMBER + " ms, in a thread "
           + NUMBER + " ms")
    for detector in ("current", "sequential"):
        figure(out, r"^\s+1,000\s+csat -10 pt\s+" + NUMBER + r" min.*")
        found = re.search(rf"^\s*{detector}\s+1,000/h\s+flat:\s+{NUMBER} \[", out, re.MULTILINE)
        assert found, f"no false-alarm line for {detector} in:\n{out}"


def test_check_thresholds() -> None:
    out = run("check_thresholds.py", "--checks", "300", "--chains", "200", "--arl", "500")
    figure(out, r"^\s+167 answers a check: per-check shift \[" + NUMBER)
    figure(out, r"^\s+run length / target \[.*\]; the grid pages as " + NUMBER + " shifts")
