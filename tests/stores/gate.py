"""A TCP relay that can be shut and reopened on the same port: a Redis that dies and returns."""

from __future__ import annotations

import contextlib
import socket
import threading


def _bound(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class TcpGate:
    """Relays 127.0.0.1:``port`` to ``target`` while open; refuses connections while shut.

    While shut the port stays bound without listening: connecting is refused at once, and
    no other process can take the port in the meantime.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._socket = _bound(0)
        self.port: int = self._socket.getsockname()[1]
        self._acceptor: threading.Thread | None = None
        self._relayed: list[socket.socket] = []
        self._pumps: list[threading.Thread] = []

    def open(self) -> None:
        """Start relaying."""
        self._socket.listen(16)
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def shut(self) -> None:
        """Stop listening and cut every relayed connection; joins the relay threads."""
        if self._acceptor is not None:
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the acceptor
            self._acceptor.join(timeout=30)
            self._acceptor = None
        self._socket.close()
        for sock in self._relayed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for pump in self._pumps:
            pump.join(timeout=30)
        self._relayed, self._pumps = [], []
        self._socket = _bound(self.port)

    def close(self) -> None:
        """Shut the gate and release its port."""
        self.shut()
        self._socket.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._socket.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._relayed += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                pump = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                self._pumps.append(pump)
                pump.start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
