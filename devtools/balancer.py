"""What Cloud Run's front end does for the local stack: one URL in front of several instances of a
function. A development tool; runs in the stack's process on its own thread.

Like Cloud Run functions by default, each instance serves one request at a time (``concurrency``): a
request goes to an idle instance (round robin among them); when every instance is busy it waits up to
``pending_s`` for one to free up, and then gets 429, as Cloud Run answers when no instance is available
(a Pub/Sub push retries it with backoff, then dead-letters it). ``served``, ``refused`` and
``peak`` (the most requests an instance ever had at once) show what happened; ``answers`` the status
and body of the latest requests, in order.
"""

from __future__ import annotations

import collections
import http.server
import itertools
import threading
import time

import httpx

from .emulators import free_port

NO_INSTANCE = b'{"error": "The request was aborted because there was no available instance."}'


class Balancer:
    def __init__(self, backends: list[str], *, concurrency: int | None = 1, pending_s: float = 10.0,
                 timeout_s: float = 600.0) -> None:
        self.backends = [b.rstrip("/") for b in backends]
        self.concurrency = concurrency  # requests an instance serves at once; None: no limit
        self.pending_s = pending_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.served = [0] * len(self.backends)
        self.peak = [0] * len(self.backends)
        self.refused = 0
        self.answers: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=10_000)
        self._busy = [0] * len(self.backends)
        self._turn = itertools.count()
        self._free = threading.Condition()
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

    def _pick(self) -> int | None:
        """An idle instance, marked busy; None when none frees up within ``pending_s``."""
        deadline = time.monotonic() + self.pending_s
        n = len(self.backends)
        with self._free:
            while True:
                idle = [i for i in range(n) if self.concurrency is None or self._busy[i] < self.concurrency]
                if idle:
                    turn = next(self._turn)
                    chosen = min(idle, key=lambda i: (self._busy[i], (i - turn) % n))
                    self._busy[chosen] += 1
                    self.served[chosen] += 1
                    self.peak[chosen] = max(self.peak[chosen], self._busy[chosen])
                    return chosen
                left = deadline - time.monotonic()
                if left <= 0:
                    self.refused += 1
                    return None
                self._free.wait(left)

    def _release(self, chosen: int) -> None:
        with self._free:
            self._busy[chosen] -= 1
            self._free.notify()

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
        if chosen is None:
            status, payload, ctype = 429, NO_INSTANCE, "application/json"
        else:
            try:
                response = self._http.request(handler.command, self.backends[chosen] + handler.path, content=body,
                                              headers=headers)
                status, payload = response.status_code, response.content
                ctype = response.headers.get("content-type")
            except httpx.HTTPError as exc:
                status, payload = 502, f'{{"error": "backend: {type(exc).__name__}"}}'.encode()
                ctype = "application/json"
            finally:
                self._release(chosen)
        self.answers.append((status, body))
        handler.send_response(status)
        handler.send_header("content-type", ctype or "application/json")
        handler.send_header("content-length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()
