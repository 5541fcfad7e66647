"""Expected failures of the command line: one line each, naming the cause and the fix.

A command raises :class:`CliError` (or lets one of the known exceptions below escape);
``touchstream``'s entry point prints ``touchstream <command>: <cause> — <fix>`` on
stderr and exits with the code of its kind. Tracebacks are printed only with
``--debug``: a new user needs the cause and the next step, not the call stack.
"""

from __future__ import annotations

import enum
import errno
import socket
from pathlib import Path

import pydantic


class Exit(enum.IntEnum):
    """The exit codes of ``touchstream`` (README "Exit codes" lists the same)."""

    OK = 0
    UNEXPECTED = 1
    """A bug or an unforeseen condition; ``--debug`` shows the traceback."""
    USAGE = 2
    """A wrong option, argument or value on the command line."""
    CONFIG = 3
    """A setting (``TOUCHSTREAM_*``, the TOML or JSON configuration files) is wrong."""
    DATA_DIR = 4
    """The data directory cannot be used: in use, not writable, corrupt, other config."""
    ADDRESS = 5
    """The address to listen on cannot be bound: in use, not this machine's, privileged."""
    DESTINATION = 6
    """Where events go, or where state comes from, is unreachable or refuses us."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C before it finished (128 + SIGINT)."""


class CliError(Exception):
    """An expected failure: what happened, what to do about it, and the exit code."""

    def __init__(self, cause: str, fix: str = "", code: Exit = Exit.UNEXPECTED) -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix
        self.code = code

    def line(self, prog: str) -> str:
        """The one line printed for it: ``prog: cause — fix`` (newlines folded)."""
        text = f"{prog}: {self.cause}" + (f" — {self.fix}" if self.fix else "")
        return " ".join(text.split())


def settings_error(exc: Exception) -> CliError:
    """A ``Settings`` that cannot be built: name each variable and why."""
    if isinstance(exc, pydantic.ValidationError):
        parts = []
        for error in exc.errors():
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            location = [str(p) for p in error.get("loc", ())]
            if location:
                variable = "TOUCHSTREAM_" + location[0].upper()
                given = error.get("input")
                shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
                parts.append(f"{variable}: {message}{shown}")
            else:  # a check across fields names its variable in its message
                parts.append(message)
        cause = "; ".join(parts)
    else:
        cause = str(exc)
    return CliError(cause, "fix the setting in the environment or the TOUCHSTREAM_CONFIG "
                           "file (README: Configuration)", Exit.CONFIG)


def config_file_error(variable: str, path: Path | None, exc: Exception) -> CliError:
    """An engine or detection configuration file that cannot be read or is invalid."""
    if isinstance(exc, FileNotFoundError):
        reason = "no such file"
    elif isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    elif isinstance(exc, pydantic.ValidationError):
        reason = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or '$'}: {e.get('msg', 'invalid')}"
            for e in exc.errors())
    else:
        reason = str(exc)
    return CliError(f"{variable}={path}: {reason}",
                    f"point {variable} at a valid JSON file, or unset it for the defaults",
                    Exit.CONFIG)


def storage_error(path: Path, reason: str) -> CliError:
    """The embedded runner's data directory cannot be used."""
    if "in use by another" in reason:
        return CliError(f"data directory {path} is {reason}",
                        "stop the other `touchstream serve`, or use another directory "
                        "with --data-dir (TOUCHSTREAM_DATA_DIR)", Exit.DATA_DIR)
    if "different engine configuration" in reason:
        cause = reason.split("; start with")[0]  # the runner's own advice, said below
        return CliError(f"{path}: {cause}; nothing was changed",
                        "start with the configuration it was made with (`serve --simulate` "
                        "uses the demo's targets, plain `serve` the defaults, "
                        "TOUCHSTREAM_ENGINE_CONFIG a file), or use a new directory with "
                        "--data-dir", Exit.DATA_DIR)
    return CliError(f"{path}: {reason}", "fix the directory, or use another with "
                                         "--data-dir (TOUCHSTREAM_DATA_DIR)", Exit.DATA_DIR)


def bind_error(host: str, port: int, exc: OSError) -> CliError:
    """The address to serve on cannot be bound."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return CliError(f"cannot listen on {where}: the port is in use (another "
                        "touchstream, or another program)",
                        "stop it, or choose another port with --port (TOUCHSTREAM_PORT)",
                        Exit.ADDRESS)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return CliError(f"cannot listen on {where}: permission denied (ports below 1024 "
                        "need privileges)", "choose a port above 1023 with --port",
                        Exit.ADDRESS)
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return CliError(f"cannot listen on {where}: {host} is not an address of this "
                        "machine", "use 127.0.0.1, or 0.0.0.0 for every interface, with "
                        "--host (TOUCHSTREAM_HOST)", Exit.ADDRESS)
    return CliError(f"cannot listen on {where}: {exc.strerror or exc}",
                    "check --host and --port", Exit.ADDRESS)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to ``host:port``; :class:`CliError` when it cannot be.

    Bound before anything else starts, so that a port in use is one line and an exit
    code, and "serving" is only logged for an address that is ours.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise bind_error(host, port, exc) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise bind_error(host, port, exc) from None
    sock.set_inheritable(True)
    return sock


__all__ = ["CliError", "Exit", "bind", "bind_error", "config_file_error", "settings_error",
           "storage_error"]
