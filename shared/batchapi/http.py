"""The tick's HTTP clients: several small keep-alive pools behind one ``send``, one SSL context.

httpcore's pool inspects every connection (a ``poll`` syscall each) whenever it assigns a request, so
one pool of 32-64 connections costs milliseconds of CPU per request; pools of a few connections keep
that cost flat (measured: docs/benchmarks.md). Async clients belong to one event loop, so a pool lives
for one tick; the SSL context (loading the CA bundle costs ~20 ms) is shared by the whole process.
"""

from __future__ import annotations

import functools
import importlib
import ssl
import sys
from typing import Any

import httpx

CONNECTIONS_PER_CLIENT = 4
USER_AGENT = "batch-relay/0.1"


def _fast_failed_sniffio_import() -> None:
    """httpcore asks ``import sniffio`` on every request and falls back to asyncio when it is missing;
    a failed import walks sys.path each time (about 0.5 ms of CPU per request here). Marking the absent
    module as absent makes that failure immediate. Nothing changes where sniffio is installed."""
    if "sniffio" not in sys.modules:
        try:
            importlib.import_module("sniffio")
        except ImportError:
            sys.modules["sniffio"] = None  # type: ignore[assignment]


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One SSL context per process: safe to share across ticks and event loops, unlike the clients."""
    return httpx.create_ssl_context()


class HttpPool:
    """``httpx.AsyncClient``s behind ``build_request``/``send`` (what ``retry.send`` uses); each request
    goes to the least busy client."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self._clients = clients
        self._busy = [0] * len(clients)

    def build_request(self, method: str, url: Any, **kw: Any) -> httpx.Request:
        return self._clients[0].build_request(method, url, **kw)

    async def send(self, request: httpx.Request, **kw: Any) -> httpx.Response:
        i = min(range(len(self._clients)), key=self._busy.__getitem__)
        self._busy[i] += 1
        try:
            return await self._clients[i].send(request, **kw)
        finally:
            self._busy[i] -= 1

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def make_http_pool(connections: int, timeout_s: float, *,
                   transport: httpx.AsyncBaseTransport | None = None) -> HttpPool:
    """Pools of ``CONNECTIONS_PER_CLIENT`` connections, ``connections`` in all, a timeout on everything."""
    _fast_failed_sniffio_import()
    per = min(CONNECTIONS_PER_CLIENT, connections)
    count = -(-connections // per)
    ssl_context = shared_ssl_context()
    return HttpPool([
        httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=per, max_keepalive_connections=per, keepalive_expiry=30),
            transport=transport, verify=ssl_context, follow_redirects=False,
            headers={"user-agent": USER_AGENT},
        )
        for _ in range(count)
    ])
