"""A touchstream deployment on Kafka, for benchmarks: topics, worker processes and
``touchstream api``, started together and always stopped.

    async with KafkaStack(bootstrap, root) as stack:     # topics, 1 worker, 1 API
        stack.api_url, stack.api_key, stack.settings       # what the bench talks to

The worker settings are the product's own (``WorkerSettings`` reads ``TOUCHSTREAM_*``
from this process's environment: ``TOUCHSTREAM_FLUSH_INTERVAL=0.25 python
benchmarks/bench_x.py`` tries another flush interval); only the names (app id, topics)
and the state directory are the bench's, so runs never share state. The API process
gets a fresh random key (read scope) through ``TOUCHSTREAM_API_KEYS``, like a deployment.

Child processes run in their own session (a Ctrl-C reaches the bench only, which then
stops them in order) and, on Linux, get SIGTERM if the bench process dies without
cleaning up (``PR_SET_PDEATHSIG``), so a killed bench leaves no worker or API behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from bench_pipeline import stop  # noqa: E402
from bench_worker import cpu_seconds  # noqa: E402

from deploy.kafka.broker import free_port  # noqa: E402
from streams.worker.settings import WorkerSettings  # noqa: E402
from streams.worker.topics import ensure_topics  # noqa: E402

__all__ = ["KafkaStack", "bench_settings", "cpu_seconds", "spawn"]


def bench_settings(bootstrap: str, name: str, state_dir: Path, **overrides: Any) -> WorkerSettings:
    """Worker settings from this process's ``TOUCHSTREAM_*`` environment (the product's
    knobs), with the bench's own broker, names and state directory."""
    names: dict[str, Any] = {
        "kafka_bootstrap": bootstrap, "app_id": name, "topic_touchpoints": f"{name}-touchpoints",
        "topic_dlq": f"{name}.dlq", "topic_scores": f"{name}.scores",
        "topic_alerts": f"{name}.alerts", "topic_followups": f"{name}.followups",
        "topic_partials": None, "state_dir": state_dir, "create_topics": True,
    }
    return WorkerSettings(**{**names, **overrides})


def settings_env(settings: WorkerSettings) -> dict[str, str]:
    """A child environment without the caller's ``TOUCHSTREAM_*``, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    env.update({f"TOUCHSTREAM_{k.upper()}": str(v)
                for k, v in settings.model_dump().items() if v is not None})
    return env


_PRCTL: Any = None
if sys.platform == "linux":  # resolved here: the child only calls it (no dlopen after fork)
    with contextlib.suppress(OSError, AttributeError):
        _PRCTL = ctypes.CDLL(None).prctl


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _PRCTL(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def spawn(args: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start ``python args...`` from the repo root, in its own session, output to ``log``."""
    return subprocess.Popen(  # noqa: S603 - our own modules, fixed argv
        [sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent if _PRCTL is not None else None)


class KafkaStack:
    """Fresh topics, ``workers`` worker processes and one ``touchstream api`` process."""

    def __init__(self, bootstrap: str, root: Path, *, workers: int = 1,
                 name: str | None = None, ready_timeout: float = 120.0,
                 **overrides: Any) -> None:
        self.name = name or f"bench-{uuid.uuid4().hex[:8]}"
        self.root = root
        self.settings = bench_settings(bootstrap, self.name, root / "worker", **overrides)
        self.workers = workers
        self.ready_timeout = ready_timeout
        self.api_key = secrets.token_hex(16)
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.worker_processes: list[subprocess.Popen[bytes]] = []
        self.api_process: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    @property
    def log_paths(self) -> list[Path]:
        return [Path(log.name) for log in self._logs]

    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """Every child by label (``worker0``..., ``api``)."""
        found = {f"worker{i}": p for i, p in enumerate(self.worker_processes)}
        if self.api_process is not None:
            found["api"] = self.api_process
        return found

    def check(self) -> None:
        """Raise if a child has exited."""
        for label, process in self.processes().items():
            if process.poll() is not None:
                raise RuntimeError(f"{label} exited with {process.returncode}; logs in "
                                   f"{self.root}")

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each child (user + system)."""
        out: dict[str, float] = {}
        for label, process in self.processes().items():
            with contextlib.suppress(OSError, IndexError):
                out[label] = cpu_seconds(process.pid)
        return out

    def _log(self, label: str) -> IO[bytes]:
        log = (self.root / f"{label}.log").open("wb")
        self._logs.append(log)
        return log

    async def start(self) -> None:
        """Create the topics, start the workers and the API, wait until the API is ready."""
        import httpx

        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(ensure_topics, self.settings)  # so both start at once
        env = settings_env(self.settings)
        for i in range(self.workers):
            self.worker_processes.append(spawn(
                ["-m", "streams.worker"],
                {**env, "TOUCHSTREAM_STATE_DIR": str(self.settings.state_dir / str(i))},
                self._log(f"worker{i}")))
        api_env = {**env, "TOUCHSTREAM_ENVIRONMENT": "production",
                   "TOUCHSTREAM_PORT": str(self.api_port),
                   "TOUCHSTREAM_DATA_DIR": str(self.root / "api"),
                   "TOUCHSTREAM_API_KEYS": f"bench:read:{self.api_key}"}
        self.api_process = spawn(["-m", "service", "api"], api_env, self._log("api"))
        deadline = time.monotonic() + self.ready_timeout
        async with httpx.AsyncClient(base_url=self.api_url, timeout=5) as client:
            while True:
                self.check()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API was not ready in {self.ready_timeout:.0f} s; "
                                       f"logs in {self.root}")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM every child (API first), then SIGKILL after a grace period."""
        children = [self.api_process, *reversed(self.worker_processes)]
        for process in children:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in children:
            if process is not None:
                stop(process)
        for log in self._logs:
            log.close()

    async def __aenter__(self) -> KafkaStack:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)
