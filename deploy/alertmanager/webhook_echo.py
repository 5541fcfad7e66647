"""A webhook receiver that records and prints what Alertmanager sends.

Every receiver in ``deploy/alertmanager/alertmanager.yml`` posts to
``http://127.0.0.1:9095/<receiver>``; run this to watch the routing on a laptop::

    python deploy/alertmanager/webhook_echo.py            # 127.0.0.1:9095
    python deploy/alertmanager/webhook_echo.py --port 9999

It prints one line per notification (receiver path, status, group labels and each
alert's name, labels and status). The tests in ``tests/deploy/`` use the same class
in a thread: ``WebhookEcho().start()``, then ``wait_for(predicate, timeout)``.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO


@dataclass(frozen=True)
class Notification:
    """One POST from Alertmanager: the URL path (the receiver) and the JSON payload."""

    path: str
    payload: dict[str, Any]
    received_at: float = field(default_factory=time.time)

    @property
    def receiver(self) -> str:
        """The receiver, named by the last segment of the URL path."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The alerts in the notification (each with labels, annotations, status)."""
        alerts: list[dict[str, Any]] = self.payload.get("alerts", [])
        return alerts

    def summary(self) -> str:
        """One line for a log: receiver, status, and each alert's name and labels."""
        parts = []
        for alert in self.alerts:
            labels = dict(alert.get("labels", {}))
            name = labels.pop("alertname", "?")
            shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            parts.append(f"{name}[{alert.get('status')}]{{{shown}}}")
        return f"{self.path} {self.payload.get('status')}: " + "; ".join(parts)


class WebhookEcho:
    """An HTTP server on ``host:port`` (0: any free port) keeping every notification."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 echo: TextIO | None = None, full: bool = False) -> None:
        self._lock = threading.Condition()
        self._received: list[Notification] = []
        self._echo = echo
        self._full = full
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9095``; receivers append ``/<name>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def notifications(self) -> list[Notification]:
        """Everything received so far, oldest first."""
        with self._lock:
            return list(self._received)

    def serve_forever(self) -> None:
        """Serve in the calling thread (the command line)."""
        self._server.serve_forever()

    def start(self) -> WebhookEcho:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="webhook-echo", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (when started with ``start``) and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> WebhookEcho:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[Notification], bool],
                 timeout: float) -> Notification | None:
        """The first notification (already received or arriving within ``timeout``
        seconds) that satisfies ``predicate``; None when none does in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for notification in self._received:
                    if predicate(notification):
                        return notification
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)

    def _record(self, notification: Notification) -> None:
        with self._lock:
            self._received.append(notification)
            self._lock.notify_all()
        if self._echo is not None:
            self._echo.write(notification.summary() + "\n")
            if self._full:
                self._echo.write(json.dumps(notification.payload, indent=2) + "\n")
            self._echo.flush()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_error(400, "body is not JSON")
                    return
                echo._record(Notification(self.path, payload))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # one summary line per notification is enough

        return Handler


def main(argv: list[str] | None = None) -> None:
    """Run the echo receiver in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description="Print what Alertmanager's webhooks send.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--json", action="store_true",
                        help="also print each payload in full, as JSON")
    args = parser.parse_args(argv)
    server = WebhookEcho(args.host, args.port, echo=sys.stdout, full=args.json)
    sys.stdout.write(f"webhook echo listening on {server.url}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
