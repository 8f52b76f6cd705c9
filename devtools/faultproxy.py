"""A tiny reverse proxy that fails chosen requests with 503: puts transient faults in front of a real
server (fake-gcs-server) for tests. ``FaultProxy(target_url).start()``; ``fail_next(n, match)``."""

from __future__ import annotations

import http.server
import threading

import httpx

from .emulators import free_port


class FaultProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._failures: list[tuple[int, str]] = []
        self.failed = 0
        self.forwarded = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy._should_fail(self.command, self.path):
                    payload = b'{"error": {"code": 503, "message": "injected", "status": "UNAVAILABLE"}}'
                    self.send_response(503)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                with httpx.Client(timeout=120) as client:
                    reply = client.request(self.command, proxy.target + self.path, headers=headers, content=body)
                proxy.forwarded += 1
                self.send_response(reply.status_code)
                for key, value in reply.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _should_fail(self, method: str, path: str) -> bool:
        with self._lock:
            for i, (left, match) in enumerate(self._failures):
                if match in f"{method} {path}":
                    if left <= 1:
                        self._failures.pop(i)
                    else:
                        self._failures[i] = (left - 1, match)
                    self.failed += 1
                    return True
        return False

    def fail_next(self, count: int, match: str = "") -> None:
        """Answer the next ``count`` requests whose ``METHOD path`` contains ``match`` with 503."""
        with self._lock:
            self._failures.append((count, match))

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
