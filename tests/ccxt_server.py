"""A local HTTP server that answers real ccxt exchange objects with recorded-shape JSON.

ccxt's own request signing, parsing and error mapping run unchanged: only the
exchange's API host is pointed at 127.0.0.1. Routes are ``(METHOD, path)``;
``fail(path, status, body, times)`` scripts real error answers (429, 503,
exchange error codes) for the next calls to a path. Unknown paths answer 404,
so an unexpected request fails the test instead of reaching the internet.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Answer = tuple[int, Any]
Route = Callable[["Request"], Answer]


class Request:
    def __init__(
        self, method: str, path: str, query: dict[str, str], body: str, headers: dict[str, str]
    ) -> None:
        self.method, self.path, self.query, self.body, self.headers = (
            method,
            path,
            query,
            body,
            headers,
        )

    @property
    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body).items()}


class ExchangeServer:
    def __init__(self, routes: dict[tuple[str, str], Route | Answer]) -> None:
        self.routes = routes
        self.requests: list[Request] = []
        self._faults: dict[str, list[Answer]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                query = {k: v[-1] for k, v in parse_qs(split.query).items()}
                request = Request(self.command, split.path, query, body, dict(self.headers))
                status, payload = server.answer(request)
                data = (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            queued = self._faults.get(request.path)
            if queued:
                return queued.pop(0)
        route = self.routes.get((request.method, request.path))
        if route is None:
            return 404, {
                "error": f"no route for {request.method} {request.path} in the test server"
            }
        return route(request) if callable(route) else route

    def fail(self, path: str, status: int, body: Any, times: int = 1) -> None:
        with self._lock:
            self._faults.setdefault(path, []).extend([(status, body)] * times)

    def heal(self, path: str) -> None:
        """Drop the error answers still queued for ``path``."""
        with self._lock:
            self._faults.pop(path, None)

    def calls(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def point(self, exchange: Any) -> Any:
        """Send every API URL of ``exchange`` to this server, keeping the paths."""

        def rewrite(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: rewrite(v) for k, v in value.items()}
            if isinstance(value, str) and value.startswith("http"):
                split = urlsplit(value)
                return self.base + split.path
            return value

        exchange.urls["api"] = rewrite(exchange.urls["api"])
        return exchange

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
