"""The /sshd/ WebSocket: jupyter-server-proxy's raw socket handler, with limits.

jupyter-server-proxy (4.x, up to its main branch today) passes every chunk
that sshd sends straight to `write_message`, whether or not the client reads:
a laptop that falls asleep in the middle of a download leaves the rest of the
download in the Jupyter server's memory. The other way, a stopped sshd lets
an upload pile up the same way. This handler keeps each direction of each
connection to a bounded amount:

* download: once more than HIGH_WATER bytes written to the WebSocket are not
  yet in the kernel's socket buffer, it stops reading from sshd, and reads
  again below LOW_WATER. sshd then stops, and so does the ssh channel behind
  it: SSH's own flow control takes over.
* upload: while the connection to sshd has a full buffer (asyncio's
  pause_writing), it stops reading WebSocket frames (tornado reads the next
  frame only when on_message has returned), so TCP pushes back on the client.
  One frame is at most tornado's websocket_max_message_size (10 MiB).

It pings the client every PING_SECONDS (or c.ServerApp.websocket_ping_interval)
and closes the WebSocket when no pong comes within as long (or
c.ServerApp.websocket_ping_timeout): a client that vanished without closing (a
laptop asleep, a network gone) ends its session within about a minute, as
sshd then sees its connection end. (sshd's own ClientAliveInterval would do
the same, but its keepalives are SSH traffic, which the activity tracker would
count: an idle session would keep its server from ever being culled.)

It also bridges the moment in which the supervisor is being restarted (it was
killed): a refused connection to the port is tried again for up to
RECONNECT_SECONDS instead of failing the WebSocket at once.

jupyter-server-proxy makes the route from our entry point and has no option
for the handler class, so the server extension calls install(), which swaps
the class of that one route for a subclass of it (jupyter_server loads the
extensions in alphabetical order: jupyter_server_proxy's routes exist by then).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from tornado.websocket import WebSocketClosedError

HIGH_WATER = 1024 * 1024  # bytes per connection waiting to go to the client
LOW_WATER = 256 * 1024
RECONNECT_SECONDS = 5.0
PING_SECONDS = 30
ROUTE_NAME = "sshd"


class FlowControlledProtocol(asyncio.Protocol):
    """The connection to the supervisor's port (to sshd), for one WebSocket."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.unsent = 0  # bytes given to write_message and not flushed yet
        self.reading = True
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.handler._record_activity()
        try:
            flushed = self.handler.write_message(data, binary=True)
        except WebSocketClosedError:
            self.transport.close()
            return
        self.unsent += len(data)
        flushed.add_done_callback(functools.partial(self._flushed, len(data)))
        if self.reading and self.unsent > HIGH_WATER:
            self.reading = False
            self.transport.pause_reading()

    def _flushed(self, size: int, future: asyncio.Future) -> None:
        if not future.cancelled():
            future.exception()  # a closed WebSocket is on_close's business, not an error here
        self.unsent -= size
        if not self.reading and self.unsent <= LOW_WATER and not self.transport.is_closing():
            self.reading = True
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        self.handler.log.debug("jupyter-sshd-proxy: connection to sshd closed: %s", exc)
        self.handler.close()


class SSHDRoute:
    """Mixed in before jupyter-server-proxy's raw socket handler of the route."""

    @property
    def ping_interval(self) -> float:
        return self.settings.get("websocket_ping_interval") or PING_SECONDS

    @property
    def ping_timeout(self) -> float:
        return self.settings.get("websocket_ping_timeout") or self.ping_interval

    async def proxy_open(self, host: str, port: int, proxied_path: str = "") -> None:
        deadline = time.monotonic() + RECONNECT_SECONDS
        while True:
            try:
                transport, protocol = await self._create_ws_connection(
                    lambda: FlowControlledProtocol(self)
                )
                break
            except ConnectionRefusedError:
                # The supervisor is being restarted (it died): it listens again
                # within a fraction of a second.
                if time.monotonic() > deadline:
                    self.log.error(
                        "jupyter-sshd-proxy: nothing listens on the sshd port %s after %gs; "
                        "see the lines above for why the supervisor does not start",
                        self.port,
                        RECONNECT_SECONDS,
                    )
                    self.close()
                    return
                await asyncio.sleep(0.05)
        self.ws_transp, self.ws_proto = transport, protocol
        self._record_activity()

    async def on_message(self, message: str | bytes) -> None:
        self._record_activity()
        if isinstance(message, str):
            message = message.encode("utf-8")
        if self.ws_transp.is_closing():
            return
        self.ws_transp.write(message)
        # The next frame is read only when this returns: wait while sshd's side is full.
        await self.ws_proto.writable.wait()


def install(web_app: Any, base_url: str) -> bool:
    """Give the /sshd/ route its limits; False if jupyter-server-proxy's route is
    not where it should be (then the route works as before, without them)."""
    from jupyter_server.utils import url_path_join

    pattern = url_path_join(base_url, ROUTE_NAME, "(.*)")
    found = False
    for rule in _rules(web_app.default_router):
        regex = getattr(rule.matcher, "regex", None)
        target = rule.target
        if (
            regex is not None
            and regex.pattern.rstrip("$") == pattern
            and isinstance(target, type)
            and hasattr(target, "_create_ws_connection")
        ):
            if not issubclass(target, SSHDRoute):
                rule.target = type("SSHDRouteHandler", (SSHDRoute, target), {})
            found = True
    return found


def _rules(router: Any):
    """Every rule in tornado's routing tree."""
    for rule in getattr(router, "rules", []):
        yield rule
        yield from _rules(rule.target)
