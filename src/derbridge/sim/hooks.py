"""The simulated aggregator's webhook receiver (``derbridge sim aggregator --callback-url``), in a module of
its own so that ``http.server`` loads only when a simulator runs."""

from __future__ import annotations

import json
import queue
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit


class WebhookReceiver(BaseHTTPRequestHandler):
    """The webhook receiver: answers the echo challenge, queues each notification. Subclass it with
    ``inbox`` and ``token`` set."""

    inbox: queue.Queue[dict[str, Any]]
    token: str | None

    def do_GET(self) -> None:
        echo = parse_qs(urlsplit(self.path).query).get("echo", [""])[0]
        self._answer(200 if echo else 400, echo)

    def do_POST(self) -> None:
        if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
            self._answer(401, "")
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            self.inbox.put(json.loads(self.rfile.read(length) or b"{}"))
        except ValueError:
            self._answer(400, "")
            return
        self._answer(200, "")

    def _answer(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return
