"""The README tour: every ```bash block of README.md, run in order as a new user would,
each checked to succeed and to print what the README shows after it.

Conventions (README.md "Test it" says the same to writers):

- ```bash blocks run; ```console blocks are shown, never run (a cluster, a container
  engine, the test suite itself: commands that cannot run on a fresh clone here).
- A ```text block after a ```bash block (no other fenced block between) is what the
  block prints: each of its lines must appear in the output, in order, within one
  output line; ``…`` stands for anything and runs of spaces match any spacing.
- Blocks run in one bash shell, like one terminal session (``. .venv/bin/activate``
  and ``export`` carry over), in a fresh directory that stands for the clone's root:
  its ``data/`` is new. Paths into the clone (``make``, ``.venv/``, ``datasets/``) are
  prefixed with the clone's path, the README's ports (8080, 8081) become free ones, and
  Kafka (127.0.0.1:9092) is the test session's broker with topics of the tour's own.
- A command that serves in the foreground (``make run``, ``touchstream serve``) is
  started in the background, as the README's "second terminal" implies, and the next
  block waits until its ``/readyz`` answers 200; starting another server stops the
  previous one with SIGINT, as Ctrl-C would. Lines ending in ``&`` run as written.
- A command that fails anywhere in a block (bash's ERR trap) fails the tour, naming the
  block, the command and its output.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from deploy.kafka.broker import free_port

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
SERVER = re.compile(r"^(make (-C \S+ )?run|touchstream serve)\b")
"""Commands that serve in the foreground until stopped."""
FAILED = "__TOUR_FAILED__"
DONE = "__TOUR_DONE__"


@dataclass
class Block:
    """One fenced block of the README: its language, its text and where it starts."""

    lang: str
    text: str
    line: int
    expected: str | None = None


def blocks(markdown: str) -> list[Block]:
    """The ```bash blocks, each with the ```text block that follows it, if any."""
    found: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        start = i + 1
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        i += 1
        found.append(Block(opened.group(1), "\n".join(body) + "\n", start))
    tour: list[Block] = []
    for block in found:
        if block.lang == "bash":
            tour.append(block)
        elif block.lang == "text" and tour and tour[-1].expected is None and \
                found[found.index(block) - 1] is tour[-1]:
            tour[-1].expected = block.text
        # every other fence (console, json, python, ...) is not run
    return tour


def matches(expected: str, output: str) -> str | None:
    """``None`` when every expected line appears in order in ``output``; else the first
    expected line that does not."""
    got = [" ".join(line.split()) for line in output.splitlines()]
    at = 0
    for want in expected.splitlines():
        want = " ".join(want.split())
        if not want:
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in want.split("…")))
        while at < len(got) and not pattern.search(got[at]):
            at += 1
        if at == len(got):
            return want
        at += 1
    return None


def test_the_tour_parser_and_matcher() -> None:
    """The machinery itself: which blocks run, which text belongs to which, and how
    expected output is matched (a tour that matched anything would prove nothing)."""
    markdown = ("```bash\necho a\n```\nprints\n```text\na\n```\n"
                "```console\n$ make test\n```\n```text\nnot mine\n```\n"
                "```bash\necho b\n```\n```json\n{}\n```\n```text\nnot b's\n```\n")
    parsed = blocks(markdown)
    assert [(b.text, b.expected) for b in parsed] == [("echo a\n", "a\n"), ("echo b\n", None)]
    assert matches("sent …: accepted 5\nevery …", "x\nsent 12: accepted 5\nevery event") is None
    assert matches("b\na", "a\nb") == "a"  # in order
    assert matches("accepted 5", "accepted 6") == "accepted 5"
    assert matches("│ 4+ │ 25 │", "│       4+ │   25 │") is None
    readme = blocks(README.read_text(encoding="utf-8"))
    assert len(readme) >= 10 and sum(b.expected is not None for b in readme) >= 8
    assert not any("make test" in b.text for b in readme)  # the suite cannot run itself


@dataclass
class Shell:
    """One bash process that runs blocks as a terminal session would."""

    workdir: Path
    env: dict[str, str]
    proc: subprocess.Popen[str] = field(init=False)
    lines: queue.Queue[str] = field(init=False, default_factory=queue.Queue)
    servers: list[int] = field(init=False, default_factory=list)
    count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=self.workdir, env=self.env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        self._send(f"trap 'echo \"{FAILED} $LINENO: $BASH_COMMAND\"' ERR")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def _send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def run(self, script: str, timeout: float) -> tuple[int, str]:
        """Source ``script`` in the shell; its status and everything it printed."""
        self.count += 1
        path = self.workdir / f".tour-{self.count}.sh"
        out = self.workdir / f".tour-{self.count}.out"
        path.write_text(script, encoding="utf-8")
        self._send(f"source {shlex.quote(str(path))} > {shlex.quote(str(out))} 2>&1; "
                   f"echo \"{DONE} $?\"")
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                text = out.read_text(encoding="utf-8", errors="replace")
                pytest.fail(f"timed out after {timeout:.0f} s; output so far:\n{text}")
            if line.startswith(DONE):
                status = int(line.split()[1])
                return status, out.read_text(encoding="utf-8", errors="replace")

    def stop_servers(self) -> None:
        """Ctrl-C for every foreground server the tour put in the background."""
        for pgid in self.servers:
            with_signal(pgid, signal.SIGINT)
        for pgid in self.servers:
            wait_gone(pgid, 30)
        self.servers.clear()

    def close(self) -> None:
        self.stop_servers()
        with_signal(self.proc.pid, signal.SIGTERM)  # the shell and its & jobs
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with_signal(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def with_signal(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with_signal(pgid, signal.SIGKILL)


@dataclass
class Tour:
    workdir: Path
    ports: dict[str, int]
    kafka: str | None = None
    topics: dict[str, str] = field(default_factory=dict)

    def substitute(self, text: str) -> str:
        """The README's text with this machine's paths, ports and broker."""
        if self.kafka is not None:
            text = text.replace("127.0.0.1:9092", self.kafka)
            text = text.replace("kafka://" + self.kafka + "/touchpoints",
                                "kafka://" + self.kafka + "/" + self.topics["TOUCHPOINTS"])
        for readme_port, port in self.ports.items():
            text = re.sub(rf"(?<![\d.]){readme_port}(?!\d)", str(port), text)
        text = re.sub(r"(?m)^make ", f"make -C {shlex.quote(str(REPO))} ", text)
        text = re.sub(r"(?<![\w/.])\.venv/", f"{REPO}/.venv/", text)
        return re.sub(r"(?<![\w/.])datasets/", f"{REPO}/datasets/", text)

    def script(self, text: str, number: int) -> tuple[str, Path | None]:
        """The block as the shell runs it, and the log of the foreground server it
        starts in the background, if it starts one."""
        lines = []
        log = None
        for line in text.splitlines():
            command = line.split("  #")[0].strip()
            if SERVER.match(command) and not command.endswith("&") and "||" not in command:
                log = self.workdir / f".server-{number}.log"
                lines.append(f"setsid {command} > {shlex.quote(str(log))} 2>&1 &")
                lines.append(f"echo $! >> {shlex.quote(str(self.workdir / '.servers'))}")
            else:
                lines.append(line)
        return "\n".join(lines) + "\n", log


def wait_ready(url: str, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    text = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs if p.exists())
    pytest.fail(f"{url} not ready after {timeout:.0f} s:\n{text}")


@pytest.fixture
def shell_env(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh directory and the environment of a new user's terminal: no virtualenv
    on PATH, no TOUCHSTREAM_* settings but where the demo keeps its data and its port."""
    workdir = tmp_path / "clone"
    workdir.mkdir()
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not p.startswith(str(REPO / ".venv")))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TOUCHSTREAM_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update({"PATH": path, "COLUMNS": "200", "TERM": "dumb",
                # make -C runs in the clone: keep the demo's state in the fresh directory
                "TOUCHSTREAM_DATA_DIR": str(workdir / "data")})
    yield workdir, env


@pytest.mark.slow
def test_every_bash_block_of_the_readme_works_as_printed(
        shell_env: tuple[Path, dict[str, str]], request: pytest.FixtureRequest) -> None:
    workdir, env = shell_env
    tour = Tour(workdir, {"8080": free_port(), "8081": free_port()})
    env["TOUCHSTREAM_PORT"] = str(tour.ports["8080"])  # make run's default port
    shell = Shell(workdir, env)
    servers_file = workdir / ".servers"
    started = time.monotonic()
    timings: list[str] = []
    try:
        for block in blocks(README.read_text(encoding="utf-8")):
            if "9092" in block.text and tour.kafka is None:
                # The Kafka section: the session's broker, topics of the tour's own.
                broker = request.getfixturevalue("kafka_broker")
                tour.kafka = broker.bootstrap
                run_id = uuid.uuid4().hex[:8]
                tour.topics = {name: f"tour-{run_id}-{name.lower()}" for name in
                               ("TOUCHPOINTS", "DLQ", "SCORES", "ALERTS", "FOLLOWUPS")}
                exports = [f"export TOUCHSTREAM_APP_ID=tour-{run_id}"] + [
                    f"export TOUCHSTREAM_TOPIC_{name}={topic}"
                    for name, topic in tour.topics.items()]
                shell.run("\n".join(exports) + "\n", timeout=10)
            script, server_log = tour.script(tour.substitute(block.text), block.line)
            if server_log or re.search(r"touchstream (api|worker)\b", block.text):
                shell.stop_servers()  # as Ctrl-C in the first terminal would
            began = time.monotonic()
            status, output = shell.run(script, timeout=300)
            where = f"README.md line {block.line}:\n{block.text}"
            assert FAILED not in output and status == 0, f"{where}\nfailed:\n{output}"
            if server_log is not None:
                shell.servers.extend(int(p) for p in servers_file.read_text().split())
                servers_file.unlink()
                # make run installs first, then loads a day of simulated history.
                wait_ready(f"http://127.0.0.1:{tour.ports['8080']}", 600, [server_log])
                output = server_log.read_text(errors="replace") + output
            if block.expected is not None:
                missing = matches(tour.substitute(block.expected), output)
                assert missing is None, f"{where}\ndid not print\n  {missing}\n" \
                                        f"in:\n{output[-6000:]}"
            timings.append(f"line {block.line}: {time.monotonic() - began:.1f} s")
    finally:
        shell.close()
    logging.getLogger(__name__).warning("README tour: %.0f s; %s",
                                        time.monotonic() - started, "; ".join(timings))
