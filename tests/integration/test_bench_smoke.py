"""benchmarks/bench_pipeline.py keeps working: a --quick run against the session's broker.

Not a timed test: it checks the script runs every contender and prints a line for each,
not what the figures are.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "bench_pipeline.py"

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
