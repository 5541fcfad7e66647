"""Every expected failure of the command line: one line naming the cause and the fix, the
documented exit code, and a traceback only with ``--debug``. Each case runs the real
``touchstream`` entry point as a process, as a user would."""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from service_support import CONFIG

from deploy.kafka.broker import free_port
from service.cli_errors import Exit
from streams.embedded import EmbeddedRunner
from streams.engine.config import EngineConfig

REPO = Path(__file__).resolve().parents[2]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        """stderr without log lines (a warning logged before the failure is fine)."""
        return [line for line in self.stderr.splitlines()
                if line.strip() and not LOG_LINE.match(line)]


def touchstream(*args: str, cwd: Path, env: dict[str, str] | None = None,
                timeout: float = 60) -> Result:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    proc = subprocess.run([sys.executable, "-m", "service", *args], cwd=cwd,
                          env={**clean, "COLUMNS": "200", **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def one_line(result: Result, prefix: str, code: Exit, *fragments: str) -> str:
    """The failure is exactly one non-log line on stderr, with the code and the words."""
    assert result.code == code, (result.code, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.errors) == 1, result.stderr
    line = result.errors[0]
    assert line.startswith(prefix + ": "), line
    assert " — " in line, f"no fix offered: {line}"
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port bound and listening in this process."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_data_directory_in_use(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EmbeddedRunner(data, EngineConfig()):
        result = touchstream("serve", "--data-dir", str(data), "--port", str(free_port()),
                             cwd=tmp_path)
    one_line(result, "touchstream serve", Exit.DATA_DIR, f"data directory {data}", "in use",
             "--data-dir")
    assert "serving" not in result.stderr


def test_data_directory_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    result = touchstream("serve", "--port", str(free_port()), cwd=tmp_path)
    one_line(result, "touchstream serve", Exit.DATA_DIR, "data", "--data-dir")


def test_data_directory_of_another_configuration(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EmbeddedRunner(data, CONFIG):
        pass
    result = touchstream("serve", "--data-dir", str(data), "--port", str(free_port()),
                         cwd=tmp_path)
    one_line(result, "touchstream serve", Exit.DATA_DIR, "different engine configuration",
             "new directory")


def test_production_without_keys(tmp_path: Path) -> None:
    result = touchstream("serve", cwd=tmp_path, env={"TOUCHSTREAM_ENVIRONMENT": "production"})
    one_line(result, "touchstream serve", Exit.CONFIG, "TOUCHSTREAM_API_KEYS",
             "outside development")
    assert not (tmp_path / "data").exists()  # nothing was created


def test_a_setting_that_is_not_valid(tmp_path: Path) -> None:
    result = touchstream("serve", cwd=tmp_path, env={"TOUCHSTREAM_PORT": "eighty"})
    one_line(result, "touchstream serve", Exit.CONFIG, "TOUCHSTREAM_PORT", "'eighty'")


def test_an_engine_configuration_file_that_is_missing_or_wrong(tmp_path: Path) -> None:
    missing = touchstream("serve", cwd=tmp_path, env={
        "TOUCHSTREAM_ENGINE_CONFIG": "nowhere.json", "TOUCHSTREAM_PORT": str(free_port())})
    one_line(missing, "touchstream serve", Exit.CONFIG,
             "TOUCHSTREAM_ENGINE_CONFIG=nowhere.json: no such file")
    (tmp_path / "engine.json").write_text('{"allowed_lateness": "soon"}')
    wrong = touchstream("serve", cwd=tmp_path, env={
        "TOUCHSTREAM_ENGINE_CONFIG": "engine.json", "TOUCHSTREAM_PORT": str(free_port())})
    one_line(wrong, "touchstream serve", Exit.CONFIG, "allowed_lateness")


def test_port_in_use_fails_before_serving_or_touching_state(tmp_path: Path,
                                                            held_port: int) -> None:
    result = touchstream("serve", "--port", str(held_port), cwd=tmp_path)
    one_line(result, "touchstream serve", Exit.ADDRESS, f"127.0.0.1:{held_port}",
             "in use", "--port")
    assert "serving" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_an_address_not_of_this_machine(tmp_path: Path) -> None:
    result = touchstream("serve", "--host", "192.0.2.1", "--port", str(free_port()),
                         cwd=tmp_path)  # TEST-NET-1: never a local address
    one_line(result, "touchstream serve", Exit.ADDRESS, "192.0.2.1", "--host")


@pytest.mark.parametrize(("args", "fragment"), [
    (("serve", "--drop", "chat"), "--drop"),
    (("serve", "--history", "yesterday"), "--history"),
    (("simulate", "--to", "http://127.0.0.1:9"), "API key"),
    (("simulate", "--to", "x.jsonl", "--duration", "ten minutes"), "--duration"),
    (("replay", "no-such-file.jsonl", "--to", "x.jsonl"), "does not exist"),
    (("score", "no-such-file.jsonl"), "does not exist"),
    (("score", "{file}", "--window", "2w"), "--window"),
    (("airline", "--segment-by", "age"), "--segment-by"),
    (("no-such-command",), "No such command"),
])
def test_usage_errors(tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    (tmp_path / "events.jsonl").write_text("")
    args = tuple(a.replace("{file}", str(tmp_path / "events.jsonl")) for a in args)
    result = touchstream(*args, cwd=tmp_path)
    command = "touchstream" if args[0] == "no-such-command" else f"touchstream {args[0]}"
    line = one_line(result, command, Exit.USAGE, fragment)
    assert "--help" in line


class _Refusing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the handler's protocol
        body = b'{"detail": "a valid API key is required"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return None


def test_a_destination_that_refuses_the_key(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = touchstream("simulate", "--to", url, "--duration", "5s", "--no-live",
                             cwd=tmp_path, env={"TOUCHSTREAM_API_KEY": "wrong-key-0123456789"})
    finally:
        server.shutdown()
    one_line(result, "touchstream simulate", Exit.DESTINATION, "refused the API key",
             "TOUCHSTREAM_API_KEY")


def test_a_destination_that_is_not_there(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text('{"event_id": "e1"}\n')
    result = touchstream("replay", "events.jsonl", "--to", f"http://127.0.0.1:{free_port()}",
                         cwd=tmp_path, env={"TOUCHSTREAM_API_KEY": "some-key-0123456789"})
    one_line(result, "touchstream replay", Exit.DESTINATION, "cannot deliver",
             "touchstream serve")


def test_debug_shows_the_traceback(tmp_path: Path, held_port: int) -> None:
    result = touchstream("serve", "--port", str(held_port), "--debug", cwd=tmp_path)
    assert result.code == Exit.ADDRESS
    assert "Traceback" in result.stderr and "service/cli_errors.py" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("touchstream serve: cannot listen")


def test_no_arguments_prints_the_help_with_the_exit_codes(tmp_path: Path) -> None:
    result = touchstream(cwd=tmp_path)
    assert result.code == Exit.USAGE
    assert "Exit codes:" in result.stdout and "130 interrupted" in result.stdout
    assert result.stderr == ""
