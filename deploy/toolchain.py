"""The deployment tools the tests use, built from source and cached under ``.cache/bin``.

- ``helm`` (helm.sh/helm/v4 at ``HELM_VERSION``), from the Go module proxy;
- ``compose-check`` (deploy/compose/check): the Compose specification's loader;
- ``crd-check`` (deploy/helm/check): Prometheus Operator resources decoded strictly.

Each is built once and rebuilt when its source (or the pinned version) changes.
Needs Go 1.24+ (``go`` on PATH, or /usr/local/go/bin/go) and, for the first build,
the Go module proxy. Standard library only:

    python deploy/toolchain.py          # build whatever is missing, print the paths
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

__all__ = ["HELM_VERSION", "ToolError", "compose_check", "crd_check", "go_missing", "helm"]

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
BIN: Final = REPO_ROOT / ".cache" / "bin"
HELM_VERSION: Final = "v4.3.2"
_GO_FALLBACK: Final = Path("/usr/local/go/bin/go")


class ToolError(RuntimeError):
    """A tool could not be built; the message says why (with the build's output)."""


def _go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    return str(_GO_FALLBACK) if _GO_FALLBACK.is_file() else None


def go_missing() -> str | None:
    """Why the tools cannot be built here, or None when Go is available."""
    if _go() is None:
        return "go not found (PATH, /usr/local/go/bin): the deploy tools are built with Go 1.24+"
    return None


def _fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _build(name: str, fingerprint: str, argv: list[str], cwd: Path) -> Path:
    """Run ``argv`` (which writes ``BIN/name``) unless the stamp says it is current."""
    binary = BIN / name
    stamp = BIN / f".{name}.stamp"
    if binary.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
        return binary
    go = _go()
    if go is None:
        raise ToolError(go_missing() or "go not found")
    BIN.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(BIN), "CGO_ENABLED": "0"}
    result = subprocess.run([go, *argv], cwd=cwd, env=env,  # noqa: S603 - our own argv
                            capture_output=True, text=True,
                            timeout=1800, check=False)
    if result.returncode != 0 or not binary.is_file():
        raise ToolError(f"building {name} failed ({' '.join(argv)}):\n"
                        f"{result.stdout}\n{result.stderr}")
    stamp.write_text(fingerprint)
    return binary


def _module_build(name: str, directory: Path) -> Path:
    sources = sorted(p for p in directory.iterdir() if p.suffix in (".go", ".mod", ".sum"))
    fingerprint = _fingerprint(*(p.read_bytes() for p in sources))
    return _build(name, fingerprint, ["build", "-o", str(BIN / name), "."], directory)


def helm() -> Path:
    """The helm binary at ``HELM_VERSION`` (``go install``, a few minutes the first time)."""
    return _build("helm", HELM_VERSION,
                  ["install", f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}"], REPO_ROOT)


def compose_check() -> Path:
    """The Compose loader (deploy/compose/check)."""
    return _module_build("compose-check", REPO_ROOT / "deploy" / "compose" / "check")


def crd_check() -> Path:
    """The strict Prometheus Operator decoder (deploy/helm/check)."""
    return _module_build("crd-check", REPO_ROOT / "deploy" / "helm" / "check")


def main() -> int:
    """Build every tool; print where each is."""
    try:
        for build in (helm, compose_check, crd_check):
            sys.stdout.write(f"{build()}\n")
    except ToolError as exc:
        sys.stderr.write(f"toolchain: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
