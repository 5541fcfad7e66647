"""A real single-node Apache Kafka broker (KRaft mode) built from Maven Central jars.

Used by the integration tests (tests/integration/conftest.py) and for local runs:

    python deploy/kafka/broker.py fetch            # resolve the jars once
    python deploy/kafka/broker.py start [--port N] [--data-dir D]

Needs `java` (17+) and, for the first fetch, `mvn` on PATH. Standard library only, so it
runs with any Python 3.11 interpreter. Jars go to `<repo>/.cache/kafka/jars`; broker data
goes to a fresh temporary directory unless a data dir is given.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Final

__all__ = [
    "DEFAULT_JARS_DIR",
    "KAFKA_VERSION",
    "KafkaBroker",
    "ensure_jars",
    "java_missing",
]

log = logging.getLogger(__name__)

HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = HERE.parent.parent
POM: Final = HERE / "pom.xml"
LOG4J_CONFIG: Final = HERE / "log4j.properties"
DEFAULT_JARS_DIR: Final = REPO_ROOT / ".cache" / "kafka" / "jars"
KAFKA_VERSION: Final = "3.9.1"

_MARKER = ".resolved"
_NODE_ID = 1
_HOST = "127.0.0.1"
_DEFAULT_HEAP = "768m"


def java_missing() -> str | None:
    """Why the broker cannot run here (`java` or `mvn` not on PATH), or None if it can."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not found on PATH: the Kafka broker for the integration "
        "tests needs a JDK (17+) and Maven (apt-get install openjdk-17-jdk-headless maven)"
    )


def _pom_digest() -> str:
    """Fingerprint of pom.xml: a changed pom re-resolves the jars."""
    return hashlib.sha256(POM.read_bytes()).hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock, so parallel test runs resolve the jars only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(cache_dir: Path = DEFAULT_JARS_DIR) -> Path:
    """Resolve the broker's runtime jars into `cache_dir` with Maven, once; return it.

    A marker file holding pom.xml's digest records a complete resolution, so later calls
    cost nothing and an edited pom triggers a fresh one. Maven's local repository stays at
    its default (~/.m2). Raises RuntimeError with Maven's output if resolution fails.
    """
    cache_dir = cache_dir.resolve()
    marker = cache_dir / _MARKER
    digest = _pom_digest()
    if marker.is_file() and marker.read_text().strip() == digest:
        return cache_dir
    with _file_lock(cache_dir.with_name(cache_dir.name + ".lock")):
        if marker.is_file() and marker.read_text().strip() == digest:
            return cache_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(java_missing() or "mvn not found on PATH")
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob("*.jar"):
            stale.unlink()
        marker.unlink(missing_ok=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={cache_dir}",
            "-DincludeScope=runtime",
        ]
        log.info("resolving Kafka %s jars into %s", KAFKA_VERSION, cache_dir)
        started = time.monotonic()
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            cmd, capture_output=True, text=True, check=False
        )
        if result.returncode != 0 or not any(cache_dir.glob("kafka_2.13-*.jar")):
            output = (result.stdout + result.stderr).strip()
            raise RuntimeError(
                f"resolving the Kafka jars failed (exit {result.returncode}): "
                f"{' '.join(cmd)}\n{output[-8000:]}"
            )
        marker.write_text(digest + "\n")
        log.info("resolved Kafka jars in %.1f s", time.monotonic() - started)
    return cache_dir


def free_port() -> int:
    """A free TCP port on loopback (for tests, benchmarks and the broker itself)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on loopback (all held open at once so they differ)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((_HOST, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _random_cluster_id() -> str:
    """A KRaft cluster id as `kafka-storage random-uuid` makes it, without starting a JVM."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka avoids ids that look like CLI flags
            return cluster_id


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _metadata_broker_ids(host: str, port: int, timeout: float = 2.0) -> list[int]:
    """Send a Metadata v8 request (no topics) and return the node ids of the live brokers.

    A KRaft broker lists itself only once it is registered and unfenced, which is when
    clients can really use it; an open port alone is not enough.
    """
    client_id = b"touchstream-probe"
    correlation_id = 1
    request = (
        struct.pack(">hhih", 3, 8, correlation_id, len(client_id))  # Metadata, v8
        + client_id
        + struct.pack(">i???", 0, False, False, False)  # no topics, no auto-create
    )
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _read_exactly(sock, 4))
        body = _read_exactly(sock, size)
    (got_correlation, _throttle_ms, n_brokers) = struct.unpack_from(">iii", body, 0)
    if got_correlation != correlation_id:
        raise ConnectionError(f"unexpected correlation id {got_correlation}")
    offset = 12
    ids: list[int] = []
    for _ in range(n_brokers):
        (node_id, host_len) = struct.unpack_from(">ih", body, offset)
        offset += 6 + host_len + 4  # node id, host, port
        (rack_len,) = struct.unpack_from(">h", body, offset)
        offset += 2 + max(rack_len, 0)
        ids.append(node_id)
    return ids


def _tail(path: Path, n_lines: int) -> list[str]:
    """The last `n_lines` lines of a text file (reads at most its last 256 KiB)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 256 * 1024))
            data = handle.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-n_lines:]


_RUNNING: set[KafkaBroker] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Never leave a JVM behind when the interpreter exits without stopping a broker."""
    for broker in list(_RUNNING):
        broker.stop()


class KafkaBroker:
    """One Kafka 3.9 broker+controller process (KRaft) on free loopback ports.

    `start()` formats the data dir on first use and waits until the broker answers a
    Metadata request listing itself; `stop()` sends SIGTERM, then SIGKILL after a grace
    period; `restart()` keeps ports, data and cluster id. As a context manager it starts
    and stops the broker and deletes its data dir if it created it.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        data_dir: Path | None = None,
        jars_dir: Path = DEFAULT_JARS_DIR,
        heap: str = _DEFAULT_HEAP,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Pick the ports and data dir; nothing runs until `start()`.

        `data_dir` is used as is and kept (an already formatted one is reused); without
        it a fresh temporary directory is made and removed by `close()`. `properties`
        add to or override the generated server.properties.
        """
        free = iter(free_ports(2))
        self.port: Final = port if port is not None else next(free)
        self.controller_port: Final = controller_port if controller_port is not None else next(free)
        if self.port == self.controller_port:
            raise ValueError("port and controller_port must differ")
        self._owns_dir = data_dir is None
        root = data_dir if data_dir is not None else Path(tempfile.mkdtemp(prefix="kafka-"))
        self.data_dir: Final = root.resolve()
        self.jars_dir: Final = jars_dir
        self.heap: Final = heap
        self._extra = dict(properties or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None

    # --- paths and addresses -------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """`host:port` for clients' bootstrap_servers."""
        return f"{_HOST}:{self.port}"

    @property
    def log_dir(self) -> Path:
        """Where the broker's log files go."""
        return self.data_dir / "logs"

    @property
    def log_path(self) -> Path:
        """The broker's log4j log (startup, errors, shutdown)."""
        return self.log_dir / "server.log"

    @property
    def console_path(self) -> Path:
        """The JVM's stdout/stderr (JVM errors, logging set-up problems)."""
        return self.log_dir / "console.log"

    @property
    def properties_path(self) -> Path:
        """The generated server.properties."""
        return self.data_dir / "server.properties"

    @property
    def kafka_log_dir(self) -> Path:
        """Kafka's `log.dirs`: the partitions' data and the metadata log."""
        return self.data_dir / "kraft"

    @property
    def running(self) -> bool:
        """Whether the broker's JVM is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The JVM's process id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    def log_tail(self, n_lines: int = 60) -> str:
        """The end of the broker's logs, for error messages."""
        parts: list[str] = []
        for path in (self.log_path, self.console_path):
            lines = _tail(path, n_lines)
            if lines:
                parts.append(f"--- last {len(lines)} lines of {path} ---")
                parts.extend(lines)
        return "\n".join(parts) if parts else f"(no broker logs in {self.log_dir})"

    # --- lifecycle -----------------------------------------------------------------

    def server_properties(self) -> dict[str, str]:
        """The broker configuration written to server.properties."""
        props = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            "controller.quorum.voters": f"{_NODE_ID}@{_HOST}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{_HOST}:{self.port},CONTROLLER://{_HOST}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{_HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.kafka_log_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
        }
        props.update(self._extra)
        return props

    def _write_properties(self) -> None:
        lines = [f"{key}={value}" for key, value in self.server_properties().items()]
        self.properties_path.write_text(
            "# generated by deploy/kafka/broker.py\n" + "\n".join(lines) + "\n"
        )

    def _java(self, jars: Path, heap: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError(java_missing() or "java not found on PATH")
        return [
            java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration={LOG4J_CONFIG.as_uri()}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            f"{jars}/*",
        ]

    def _format(self, jars: Path) -> None:
        """Format the KRaft metadata log once; a formatted dir keeps its cluster id."""
        if (self.kafka_log_dir / "meta.properties").is_file():
            return
        cmd = [
            *self._java(jars, "256m"),
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            _random_cluster_id(),
            "-c",
            str(self.properties_path),
        ]
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            cmd, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"formatting {self.kafka_log_dir} failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr).strip()[-8000:]}"
            )

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker and block until it serves metadata; no-op if it is running.

        Raises RuntimeError with the log tail if the JVM exits or is not ready in time.
        """
        if self.running:
            return
        jars = ensure_jars(self.jars_dir)
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        self._format(jars)
        cmd = [*self._java(jars, self.heap), "kafka.Kafka", str(self.properties_path)]
        self._console = self.console_path.open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,  # Ctrl-C reaches us; stop() shuts the JVM down
        )
        _RUNNING.add(self)
        log.info("starting Kafka broker pid %d on %s", self._process.pid, self.bootstrap)
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        log.info("Kafka broker ready on %s in %.1f s", self.bootstrap, time.monotonic() - started)

    def _wait_ready(self, deadline: float) -> None:
        """Poll until the JVM is alive and the broker lists itself in Metadata."""
        assert self._process is not None  # noqa: S101 - set by start()
        last_error = "port not open yet"
        while True:
            code = self._process.poll()
            if code is not None:
                raise RuntimeError(
                    f"Kafka broker exited with code {code} during start-up\n" + self.log_tail()
                )
            try:
                ids = _metadata_broker_ids(_HOST, self.port)
            except (OSError, struct.error) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if _NODE_ID in ids:
                    return
                last_error = f"broker not yet in metadata (brokers: {ids})"
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"Kafka broker on {self.bootstrap} not ready in time ({last_error})\n"
                    + self.log_tail()
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the JVM: SIGTERM (clean shutdown), then SIGKILL after `timeout` seconds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("Kafka broker pid %d ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait()
            log.info("Kafka broker on %s stopped (exit %s)", self.bootstrap, process.returncode)
        if self._console is not None:
            self._console.close()
            self._console = None
        _RUNNING.discard(self)

    def restart(self, timeout: float = 90.0) -> None:
        """Stop and start again on the same ports and data (no reformatting)."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop the broker and delete its data dir if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"KafkaBroker({self.bootstrap}, {state}, data_dir={self.data_dir})"


# --- command line --------------------------------------------------------------------


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="broker.py", description="Single-node Kafka broker (KRaft) for development."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="resolve the broker's jars with Maven")
    start = commands.add_parser("start", help="run a broker in the foreground until Ctrl-C")
    for sub in (fetch, start):
        sub.add_argument("--jars-dir", type=Path, default=DEFAULT_JARS_DIR)
    start.add_argument("--port", type=int, default=None, help="client port (default: free)")
    start.add_argument("--controller-port", type=int, default=None)
    start.add_argument(
        "--data-dir", type=Path, default=None, help="kept and reused (default: temporary)"
    )
    start.add_argument("--heap", default=_DEFAULT_HEAP, help="JVM -Xmx (default: 768m)")
    start.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if args.command == "fetch":
        print(ensure_jars(args.jars_dir))  # noqa: T201
        return 0

    reason = java_missing()
    if reason is not None:
        print(reason, file=sys.stderr)  # noqa: T201
        return 2
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop_requested.set())
    broker = KafkaBroker(
        port=args.port,
        controller_port=args.controller_port,
        data_dir=args.data_dir,
        jars_dir=args.jars_dir,
        heap=args.heap,
    )
    try:
        broker.start(args.timeout)
        print(broker.bootstrap, flush=True)  # noqa: T201
        print(f"logs: {broker.log_path}", file=sys.stderr, flush=True)  # noqa: T201
        while broker.running and not stop_requested.wait(0.5):
            pass
        if not stop_requested.is_set():
            print("Kafka broker died\n" + broker.log_tail(), file=sys.stderr)  # noqa: T201
            return 1
    except RuntimeError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
