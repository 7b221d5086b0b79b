"""A scripted hostile server on 127.0.0.1 for the attack tests (test_attack_client.py).

tests/support/hostile.py answers whole, well-formed HTTP answers from a table. This one
hands each connection's socket to a test's function once the request head has
arrived, so a test can answer what http.server never would: a body that drips
one byte at a time, a chunked body that breaks off, a WebSocket frame of a
gigabyte, an event stream that never ends, a redirect to another scheme.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Request:
    method: str
    path: str
    head: bytes  # the request line and the headers, as received

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None

    @property
    def is_upgrade(self) -> bool:
        return (self.header("Upgrade") or "").lower() == "websocket"


def websocket_accept(request: Request) -> bytes:
    """The 101 answer that completes request's WebSocket handshake."""
    key = (request.header("Sec-WebSocket-Key") or "").encode() + WEBSOCKET_GUID
    accept = base64.b64encode(hashlib.sha1(key).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


class ScriptedServer:
    """Calls handler(sock, request, stop) in a thread per connection.

    stop is set when the server closes: a handler that drips or streams must
    end then (the socket is closed for it, which ends the client's wait)."""

    def __init__(self, handler: Callable[[socket.socket, Request, threading.Event], None]):
        self.handler = handler
        self.requests: list[Request] = []
        self.stop = threading.Event()
        self._open: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self._open.append(sock)
            threading.Thread(target=self._one, args=(sock,), daemon=True).start()

    def _one(self, sock: socket.socket) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                head += chunk
            head = head.split(b"\r\n\r\n", 1)[0]
            method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            request = Request(method, path, head)
            self.requests.append(request)
            self.handler(sock, request, self.stop)
        except OSError:
            pass
        finally:
            sock.close()

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):  # wakes the accept() (close alone does not, on Linux)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
