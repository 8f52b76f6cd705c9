"""The server: an ``asyncio.Protocol`` with a minimal HTTP/1.1 parser (keep-alive, pipelining, Content-Length
request bodies; Content-Length or chunked responses streamed under back-pressure), latency as
``loop.call_later``, and the entry point ``python -m devtools.simulator``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import traceback
from collections.abc import Iterator

import devtools.simulator as package
from devtools.simulator.app import Simulator
from devtools.simulator.webhooks import advance_ended_batches
from devtools.simulator.wire import Reply, google_error, payload

MAX_HEAD = 64 * 1024
MAX_BODY = 512 * 1024 * 1024


class HttpProtocol(asyncio.Protocol):
    """One connection. Requests are answered strictly in order (pipelined ones wait in the buffer)."""

    __slots__ = ("sim", "loop", "transport", "buf", "busy", "api", "close_after", "timer", "stream",
                 "chunked", "paused", "closed", "processing")

    def __init__(self, sim: Simulator, loop: asyncio.AbstractEventLoop) -> None:
        self.sim = sim
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.api = False
        self.close_after = False
        self.timer: asyncio.TimerHandle | None = None
        self.stream: Iterator[bytes] | None = None
        self.chunked = False
        self.paused = False
        self.closed = False
        self.processing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sim.connections.add(self)
        self.sim.connections_opened += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.sim.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.stream = None
        if self.busy and self.api:
            self.sim.in_flight -= 1
        self.busy = False
        self.buf.clear()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.stream is not None and not self.closed:
            self._pump()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _fail(self, code: int, message: str) -> None:
        body = json.dumps(google_error(code, message)).encode()
        self.transport.write(payload(code, body, False))
        self.transport.close()
        self.closed = True

    def _process(self) -> None:
        if self.processing:
            return
        self.processing = True
        try:
            while not self.busy and not self.closed and self.buf:
                if not self._next_request():
                    return
        finally:
            self.processing = False

    def _next_request(self) -> bool:
        buf = self.buf
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._fail(431, "Request header fields too large.")
            return False
        lines = buf[:end].decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            self._fail(400, "Malformed request line.")
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = 0
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._fail(400, "Bad Content-Length.")
                return False
        elif "transfer-encoding" in headers:
            self._fail(411, "Chunked request bodies are not supported; send Content-Length.")
            return False
        total = end + 4 + length
        if len(buf) < total:
            return False
        body = bytes(buf[end + 4:total]) if length else b""
        del buf[:total]
        conn = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            keep_alive = "keep-alive" in conn
        else:
            keep_alive = "close" not in conn
        self.close_after = not keep_alive
        self.busy = True
        self._answer(method, target, headers, body, keep_alive)
        return True

    def _answer(self, method: str, target: str, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        path, _, query = target.partition("?")
        sim = self.sim
        if path.startswith("/_sim/"):
            self.api = False
            self._send(sim.handle_admin(method, path, query, body, keep_alive))
            return
        self.api = True
        sim.in_flight += 1
        if sim.in_flight > sim.max_in_flight:
            sim.max_in_flight = sim.in_flight
        try:
            reply = sim.handle_api(method, path, query, headers, keep_alive, body)
        except Exception as exc:  # noqa: BLE001 - a simulator bug must not look like a dead server
            traceback.print_exc()
            body = json.dumps(google_error(500, f"simulator bug: {exc!r}")).encode()
            reply = Reply(0.0, payload(500, body, keep_alive))
        if reply.delay > 0:
            self.timer = self.loop.call_later(reply.delay, self._deliver, reply)
        else:
            self._deliver(reply)

    def _deliver(self, reply: Reply) -> None:
        self.timer = None
        if self.closed:
            return
        if reply.drop:
            self._finish()
            self.closed = True
            self.transport.abort()
            return
        if reply.stream is None:
            self._send(reply.payload)
            return
        self.transport.write(reply.payload)
        self.stream = reply.stream
        self.chunked = reply.chunked
        self._pump()

    def _pump(self) -> None:
        transport = self.transport
        stream = self.stream
        chunked = self.chunked
        while not self.paused:
            chunk = next(stream, None)
            if chunk is None:
                self.stream = None
                if chunked:
                    transport.write(b"0\r\n\r\n")
                self._finish()
                if not self.busy:
                    self._process()
                return
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if self.closed or transport.is_closing():  # the peer went away: stop generating
                self.stream = None
                return

    def _send(self, payload: bytes) -> None:
        self.transport.write(payload)
        self._finish()
        if not self.busy:
            self._process()

    def _finish(self) -> None:
        if self.api:
            self.sim.in_flight -= 1
            self.api = False
        self.busy = False
        if self.close_after:
            self.closed = True
            self.transport.close()


# --------------------------------------------------------------------------------------------------------
# entry point


async def _serve(host: str, port: int, sim: Simulator) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(sim, loop), host, port, backlog=2048,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"batch-api simulator listening on http://{bound[0]}:{bound[1]}", flush=True)
    ticker = asyncio.ensure_future(advance_ended_batches(sim))
    gc.freeze()
    try:
        await stop.wait()
    finally:
        ticker.cancel()
        server.close()
        for conn in list(sim.connections):
            if conn.transport is not None:
                conn.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)


def serve(host: str = "127.0.0.1", port: int = 8089, latency_ms: float = 0.0, api_key: str | None = None,
          seed: int | None = None) -> None:
    """Run the simulator until SIGTERM/SIGINT."""
    asyncio.run(_serve(host, port, Simulator(latency_ms, api_key, seed)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.simulator",
                                     description=package.__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.latency_ms, args.api_key, args.seed)
    return 0
