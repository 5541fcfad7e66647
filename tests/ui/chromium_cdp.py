"""Headless Chromium (Debian's package) driven over the Chrome DevTools protocol.

Just enough of the protocol for the page test: start the browser on a throw-away profile,
attach to its page over the websocket (aiohttp's client, already installed with
faust-streaming), send commands, keep every event it reports, evaluate JavaScript, type,
press keys, take screenshots, and stop the browser and every process it started.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx

FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--no-first-run", "--no-default-browser-check",
    "--mute-audio", "--hide-scrollbars", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0", "--lang=en-US",
)


def find_chromium() -> str | None:
    """The Debian ``chromium`` executable, if installed."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


class CdpError(RuntimeError):
    """The browser answered a command with an error, or a script threw."""


class Page:
    """One page target: commands with ``send``, every event kept in ``events``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            future = self._waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif "method" in data:
                self.events.append(data)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(CdpError("the browser closed the connection"))

    async def send(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        """Run one protocol command and return its result."""
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, timeout)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = 20.0) -> Any:
        """Poll ``expression`` until it is truthy; its value. Fails naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                status = await self.evaluate(
                    "document.getElementById('status')?.textContent ?? ''")
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} "
                                     f"(status line: {status!r})")
            await asyncio.sleep(0.1)

    async def press(self, key: str, code: str, key_code: int, text: str = "") -> None:
        """A key press as the keyboard makes it: down (with text) and up."""
        common = {"key": key, "code": code, "windowsVirtualKeyCode": key_code,
                  "nativeVirtualKeyCode": key_code}
        await self.send("Input.dispatchKeyEvent", type="keyDown", text=text, **common)
        await self.send("Input.dispatchKeyEvent", type="keyUp", **common)

    async def type_text(self, text: str) -> None:
        """Text into the focused element, as an input method would insert it."""
        await self.send("Input.insertText", text=text)

    async def screenshot(self, path: Path, width: int, mobile: bool = False) -> bytes:
        """A full-page PNG at ``width`` CSS pixels, saved to ``path``."""
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=900,
                        deviceScaleFactor=1, mobile=mobile)
        await asyncio.sleep(0.3)  # let the layout settle at the new width
        metrics = await self.send("Page.getLayoutMetrics")
        height = int(metrics["cssContentSize"]["height"]) + 1
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=mobile)
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        png = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The port Chromium chose (``--remote-debugging-port=0`` writes it to the profile)."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CdpError(f"chromium exited with {proc.returncode} before listening")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(marker.read_text().splitlines()[0])
        time.sleep(0.05)
    raise CdpError("chromium did not open its DevTools port")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the browser and every process it started (its own process group)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # helpers (renderer, zygote) left behind, if any


@contextlib.asynccontextmanager
async def chromium(executable: str, profile: Path, log: Path) -> AsyncIterator[Page]:
    """Headless Chromium on a fresh ``profile``, attached to its blank page."""
    profile.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        port = await asyncio.to_thread(_devtools_port, profile, proc, 20.0)
        async with httpx.AsyncClient(timeout=5) as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(page_url, max_msg_size=0) as ws:
            page = Page(ws)
            try:
                yield page
            finally:
                with contextlib.suppress(Exception):
                    await page.send("Browser.close", timeout=5)
                await page.close()
    finally:
        await asyncio.to_thread(_stop, proc)
