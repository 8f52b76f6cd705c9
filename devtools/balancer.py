"""What Cloud Run's front end does for the local stack: one URL in front of several instances of a
function, each request to the least busy one (round robin among equals). A development tool; runs in
the stack's process on its own thread."""

from __future__ import annotations

import http.server
import itertools
import threading

import httpx

from .emulators import free_port


class Balancer:
    def __init__(self, backends: list[str], *, timeout_s: float = 600.0) -> None:
        self.backends = [b.rstrip("/") for b in backends]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.served = [0] * len(self.backends)
        self._busy = [0] * len(self.backends)
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=timeout_s)
        balancer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                balancer._forward(self)

            do_GET = do_PUT = do_DELETE = do_POST  # noqa: N815

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # a peer that hangs up is not news
                pass

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="balancer", daemon=True)

    def start(self) -> Balancer:
        self._thread.start()
        return self

    def _pick(self) -> int:
        with self._lock:
            turn = next(self._turn)
            order = sorted(range(len(self.backends)), key=lambda i: (self._busy[i], (i - turn) % len(self.backends)))
            chosen = order[0]
            self._busy[chosen] += 1
            self.served[chosen] += 1
            return chosen

    @staticmethod
    def _body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
        """The request body, whether it came with a Content-Length or chunked (the Pub/Sub emulator's
        push requests are chunked)."""
        if "chunked" in (handler.headers.get("transfer-encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += handler.rfile.read(size)
                handler.rfile.readline()
        length = int(handler.headers.get("content-length") or 0)
        return handler.rfile.read(length) if length else b""

    def _forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = self._body(handler)
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")}
        chosen = self._pick()
        try:
            response = self._http.request(handler.command, self.backends[chosen] + handler.path, content=body,
                                          headers=headers)
            status, payload, ctype = response.status_code, response.content, response.headers.get("content-type")
        except httpx.HTTPError as exc:
            status, payload, ctype = 502, f'{{"error": "backend: {type(exc).__name__}"}}'.encode(), "application/json"
        finally:
            with self._lock:
                self._busy[chosen] -= 1
        handler.send_response(status)
        handler.send_header("content-type", ctype or "application/json")
        handler.send_header("content-length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()
