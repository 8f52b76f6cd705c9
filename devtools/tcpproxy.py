"""A TCP proxy whose connections can be cut: drops a gRPC client's connection (a Firestore listener's,
say) to a real server for tests. ``TcpProxy("127.0.0.1:8681").start()``; ``cut()`` closes every open
connection; ``refuse(True)`` makes new ones fail until ``refuse(False)``."""

from __future__ import annotations

import contextlib
import socket
import threading

from .emulators import free_port


class TcpProxy:
    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host or "127.0.0.1", int(port))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.cuts = 0
        self.connections = 0
        self._refusing = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcpproxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                refused = self._refusing  # refused (and cut) while this one was being connected
                if not refused:
                    self._open |= {client, upstream}
                    self.connections += 1
            if refused:
                client.close()
                upstream.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._open -= {src, dst}

    def cut(self) -> int:
        """Close every open connection (both ends); returns how many there were."""
        with self._lock:
            sockets = list(self._open)
            self._open.clear()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.cuts += 1
        return len(sockets) // 2

    def refuse(self, on: bool) -> None:
        """Refuse new connections (``on``) or take them again; refuse, then ``cut``, to leave none open."""
        with self._lock:
            self._refusing = on

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self.cut()
