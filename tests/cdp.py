"""Headless Chromium driven over the DevTools protocol, with the standard library only.

Why CDP and not `--dump-dom` with `--enable-logging=stderr`: the log prints every console
message at one level (`INFO:CONSOLE`), so a `console.log` and an error look alike; it
says nothing of requests, so a page that fetches a script from a CDN would pass; and
reading the DOM back needs a parser of its own. Over CDP the page's console calls come
with their type (`Runtime.consoleAPICalled`), uncaught exceptions as
`Runtime.exceptionThrown`, the browser's own errors (a failed load, a blocked request) as
`Log.entryAdded`, every request as `Network.requestWillBeSent`, and the DOM is read with
`Runtime.evaluate` in the page itself, after layout (so visibility can be asserted).

Synchronisation is by protocol events, never by sleeping: the browser prints its
DevTools address on stderr when it listens, a navigation is done when
`Page.loadEventFired` arrives, and every message is read in order from one socket (a
socket timeout only guards against a hang).

The WebSocket client is the minimum RFC 6455 needs for this: a client handshake, masked
text frames out, unmasked frames in (continuations joined, pings answered).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

TIMEOUT = 30.0  # a hang guard only


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class WebSocket:
    def __init__(self, url: str):
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.hostname}:{parsed.port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("the browser closed the socket during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"handshake refused: {head.decode(errors='replace')}")

    def _exact(self, count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            chunk = self.sock.recv(min(count - len(data), 1 << 20))
            if not chunk:
                raise ConnectionError("the browser closed the socket")
            data += chunk
        return bytes(data)

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytearray([0x81])
        length = len(payload)
        if length < 126:
            header.append(0x80 | length)
        elif length < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def _frame(self) -> tuple[int, bool, bytes]:
        first, second = self._exact(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._exact(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._exact(8))[0]
        mask = self._exact(4) if second & 0x80 else None
        data = self._exact(length)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return first & 0x0F, bool(first & 0x80), data

    def receive(self) -> str:
        message = bytearray()
        while True:
            opcode, final, data = self._frame()
            if opcode == 0x9:  # ping
                self.sock.sendall(bytes([0x8A, 0x80 | len(data)]) + b"\0\0\0\0" + data)
                continue
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            message += data
            if final:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


@dataclass
class PageLoad:
    """What one navigation produced besides the page."""

    console: list[str] = field(default_factory=list)  # console.error/warn/assert calls
    exceptions: list[str] = field(default_factory=list)  # uncaught exceptions
    log_errors: list[str] = field(default_factory=list)  # the browser's own errors and warnings
    requests: list[str] = field(default_factory=list)  # every URL the page requested

    def problems(self, page_url: str) -> list[str]:
        outside = [url for url in self.requests if url != page_url and not url.startswith("data:")]
        return ([f"console: {c}" for c in self.console] + [f"exception: {e}" for e in self.exceptions]
                + [f"log: {entry}" for entry in self.log_errors] + [f"request: {url}" for url in outside])


class Browser:
    """One headless Chromium with one page, for one test module."""

    def __init__(self, profile: Path):
        binary = chromium_path()
        assert binary, "chromium not found"
        self.process = subprocess.Popen(
            [binary, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
             "--hide-scrollbars", "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        url = None
        seen = []
        for line in self.process.stderr:  # the browser says where it listens once it does
            seen.append(line)
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                url = match.group(1)
                break
        if url is None:
            self.process.kill()
            raise RuntimeError("chromium did not start its DevTools server:\n" + "".join(seen[-20:]))
        # Keep draining stderr so the browser never blocks on a full pipe.
        import threading

        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()
        self.ws = WebSocket(url)
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, params: dict | None = None, *, session: bool = False) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            received = json.loads(self.ws.receive())
            if received.get("id") == self.next_id:
                if "error" in received:
                    raise RuntimeError(f"{method}: {received['error']}")
                return received.get("result", {})
            if "method" in received:
                self.events.append(received)

    def _wait_event(self, method: str) -> dict:
        while True:
            for index, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(index)
            received = json.loads(self.ws.receive())
            if "method" in received:
                self.events.append(received)

    def load(self, path: Path) -> tuple[PageLoad, str]:
        """Open `path`; return what the load produced and the URL it was opened at."""
        url = path.resolve().as_uri()
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=True)
        self._wait_event("Page.loadEventFired")
        self.evaluate("1")  # every event the load queued before this answer is read by now
        found = PageLoad()
        for event in self.events:
            params = event.get("params", {})
            method = event["method"]
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                entry = params["entry"]
                found.log_errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
            elif method == "Network.requestWillBeSent":
                found.requests.append(params["request"]["url"])
        self.events.clear()
        return found, url

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, width: int = 1280, height: int | None = None) -> int:
        """A PNG of the whole page laid out `width` pixels wide (or of its top `height`
        pixels); returns the page's height in CSS pixels."""
        def resize(to_height: int) -> None:
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": to_height, "deviceScaleFactor": 1, "mobile": False}, session=True)

        resize(800)  # lay the page out at its width first: its height depends on it
        full = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        shown = min(full, height or full)
        resize(shown)
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {"x": 0, "y": 0, "width": width, "height": shown, "scale": 1}},
                         session=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return full

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (ConnectionError, OSError, RuntimeError):
            pass
        self.ws.close()
        try:
            self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
