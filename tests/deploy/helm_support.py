"""Rendering the Helm chart with the real helm, for the chart tests and for the test
that starts the rendered containers (tests/integration/test_chart_processes.py).

The tools come from deploy/toolchain.py. Without Go (or the module proxy) a test is
skipped locally and fails under CI=true, where a skip would hide that nothing ran.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import toolchain

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "touchstream"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
DASHBOARDS_DIR = REPO / "deploy" / "grafana" / "dashboards"


def unavailable(reason: str) -> None:
    """Skip, or fail under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def tool(build: Callable[[], Path]) -> Path:
    """A tool from deploy/toolchain.py, built if needed."""
    try:
        return build()
    except toolchain.ToolError as exc:
        unavailable(str(exc))
        raise AssertionError("unreachable") from exc


def venv_tool(name: str, package: str) -> str:
    """A console script installed beside this Python (the dev extras), or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        unavailable(f"{name} not installed (pip install {package})")
        raise AssertionError("unreachable")
    return found


def run(argv: Iterable[str | Path], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def helm_args(values: Iterable[Path] = (), sets: dict[str, str] | None = None) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["--values", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    return args


def template(values: Iterable[Path] = (), sets: dict[str, Any] | None = None, *,
             release: str = "touchstream", namespace: str = "touchstream") -> str:
    """``helm template`` of the chart; the rendered YAML (fails the test on an error)."""
    helm = tool(toolchain.helm)
    result = run([helm, "template", release, CHART, "--namespace", namespace,
                  *helm_args(values, sets)])
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(rendered: str) -> list[dict[str, Any]]:
    """The rendered manifests, empty documents dropped."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def secret_data(docs: list[dict[str, Any]], extra: dict[str, dict[str, str]] | None = None,
                ) -> dict[str, dict[str, str]]:
    """Every Secret's data, decoded; ``extra`` stands for Secrets made outside the chart."""
    out = {d["metadata"]["name"]: {k: base64.b64decode(v).decode()
                                   for k, v in (d.get("data") or {}).items()}
           for d in by_kind(docs, "Secret")}
    out.update(extra or {})
    return out


def rule_groups_of_files() -> list[dict[str, Any]]:
    """The rule groups of deploy/prometheus/rules/*.yml, in file-name order."""
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups
