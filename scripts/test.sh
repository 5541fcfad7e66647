#!/usr/bin/env bash
# The whole test suite, as CI runs it: install into .venv, lint, type-check, test.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Prometheus's promtool and Alertmanager come from Debian's packages.
if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
   || ! command -v kcat >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing prometheus, prometheus-alertmanager and kcat (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      prometheus prometheus-alertmanager kcat >/dev/null
  else
    echo "!! promtool/alertmanager missing and cannot apt-get install them (not root)" >&2
  fi
fi

# valgrind counts instructions for benchmarks/bench_instructions.py (its smoke test).
if ! command -v valgrind >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing valgrind (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      valgrind >/dev/null
  else
    echo "!! valgrind missing and cannot apt-get install it (not root)" >&2
  fi
fi

# Headless Chromium for the live page's browser test (tests/ui) comes from Debian too.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing chromium (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium fonts-dejavu-core >/dev/null
  else
    echo "!! chromium missing and cannot apt-get install it (not root)" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'

# Go builds the deploy tools (helm, the Compose loader, the operator-types check) into
# .cache/bin: deploy/toolchain.py, once, from the Go module proxy.
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing golang-go (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      golang-go >/dev/null
  else
    echo "!! go missing and cannot apt-get install it (not root)" >&2
  fi
fi
echo "== deploy tools (helm, compose-check, crd-check)"
.venv/bin/python deploy/toolchain.py || echo "!! deploy tools not built: tests/deploy will say why" >&2

echo "== ruff"
.venv/bin/ruff check --no-cache .
echo "== mypy"
.venv/bin/mypy
echo "== import contracts (import-linter, pyproject.toml)"
.venv/bin/lint-imports --no-cache
echo "== pytest"
.venv/bin/python -m pytest "$@"
