"""The /sshd/ route, authorized like a terminal: ssh is a shell.

jupyter-server-proxy registers the route's handler itself, and its
ProxyHandler.prepare() only authenticates: any user the server knows could
upgrade to a WebSocket and reach sshd, even one whose authorizer refuses
terminals. A shell through ssh is a terminal, so the upgrade must pass the
check jupyter_server_terminals makes before it opens one: `execute` on
`terminals`.

AuthorizedUpgrade is that check, as a mixin of its own, so other behaviour of
the route (flow control, ...) can be combined with it in SSHDRouteHandler.
install() puts SSHDRouteHandler in the place of the handler jupyter-server-proxy
registered: our server extension loads after jupyter_server_proxy's, finds the
rule for the `sshd` entry point in the Tornado router and replaces its target
(upstream.py, which holds everything that leans on jupyter-server-proxy's
insides). The route is then known to be guarded by the thing that starts sshd:
the spec's command refuses unless it is called from an SSHDRouteHandler whose
request passed the check (server.py), so a disabled or broken extension, or a
jupyter-server-proxy without a raw socket proxy, means no sshd.

Once the upgrade is answered and the supervisor has greeted the connection
(its id, or a refusal), FlowControl hands the connection to a relay process
when it can (relay.py: the client's socket and the connection to sshd go to
the supervisor's relay socket, which forks one relay per connection, at most
c.SSHDProxy.max_relays at once), and from then on only hears from the relay
how many bytes went each way and how the WebSocket closed. Where it cannot
(a TLS connection, max_relays reached or 0), the route relays the bytes
itself, within the limits below.

FlowControl, the route's limits, is mixed in the same way. jupyter-server-proxy
(4.x, up to its main branch today) passes every chunk that sshd sends straight
to `write_message`, whether or not the client reads, and every frame straight
to the connection to sshd, whether or not sshd reads. It keeps each direction
of each connection to a bounded amount:

* download: once more than HIGH_WATER bytes written to the WebSocket are not
  yet in the kernel's socket buffer, it stops reading from sshd, and reads
  again when they all are. sshd then stops, and so does the ssh channel behind
  it. (SSH's own flow control bounds each channel to its window, 2 MiB with
  OpenSSH, but not the number of channels: 64 forwarded ports made a sleeping
  client cost the Jupyter server 129 MiB.)
* upload: while the connection to sshd has a full buffer (asyncio's
  pause_writing), it reads nothing more from the client, so TCP pushes back
  on the client. The client's frames are read in bulk (frames.py): at most
  one read (256 KiB) past the point where sshd's side filled, and one frame
  is at most tornado's websocket_max_message_size (10 MiB).

It pings the client every PING_SECONDS (or c.ServerApp.websocket_ping_interval)
and closes the WebSocket when no pong comes within as long (or
c.ServerApp.websocket_ping_timeout): a client that vanished without closing (a
laptop asleep, a network gone) ends its session within about a minute, as
sshd then sees its connection end. (sshd's own ClientAliveInterval would do
the same, but its keepalives are SSH traffic, which the activity tracker would
count: an idle session would keep its server from ever being culled.)

It also bridges the moment in which the supervisor is being restarted (it was
killed): a refused connection to its socket is tried again for up to
RECONNECT_SECONDS instead of failing the WebSocket at once.

Accounted tells the server's ledger (ledger.py) about the connection: the id
in the supervisor's first line (read here, never passed on: see reports.py),
the Hub user, the client's version line, the bytes each way (an integer
each, added to per chunk by the flow control), a refusal and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.utils import warn_disabled_authorization
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketProtocol, WebSocketProtocol13

from . import frames, relay, reports, upstream
from .ledger import hub_user

ROUTE_NAME = "sshd"  # the name of our jupyter_serverproxy_servers entry point
AUTH_ACTION = "execute"  # what jupyter_server_terminals asks before opening a terminal
AUTH_RESOURCE = "terminals"
HIGH_WATER = 1024 * 1024  # bytes per connection waiting to go to the client
RECONNECT_SECONDS = 5.0
RELAY_ANSWER_SECONDS = 2.0  # for the supervisor to take a connection on its relay socket
PING_SECONDS = 30
MAX_WRITEV_PARTS = 64  # messages written to sshd with one writev at most (IOV_MAX is 1024)
MAX_CLIENT_VERSION = relay.MAX_CLIENT_VERSION
MAX_REPORT = 65536  # bytes of a line from the relay, at most
# How a refusal by the supervisor closes the WebSocket: 1013 is "try again later".
REFUSALS = {
    "limit": (
        1013,
        "too many SSH connections are waiting to log in (c.SSHDProxy.max_unauthenticated); "
        "try again",
    ),
    "sshd_failing": (1011, "sshd cannot start on this server now; its log says why"),
}


class AuthorizedUpgrade(upstream.RouteMixin):
    """Refuse (403) every request of a user who may not open a terminal, and
    every request while SSH is off (c.SSHDProxy.policy).

    Mixed in before a jupyter-server-proxy handler: its prepare() runs first
    and authenticates (403 for a WebSocket upgrade without a user). Only a
    request that passed sets terminal_allowed, which the spec's command asks
    before it starts anything (server.py)."""

    terminal_allowed = False

    if TYPE_CHECKING:  # Accounted's, mixed in with this

        def _refused(self, reason: str) -> None: ...

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        await super().prepare(*args, **kwargs)
        if self._finished:
            return  # the parent answered already (a redirect to the login page)
        user = self.current_user
        if not user:
            raise web.HTTPError(403)
        authorizer = self.authorizer
        if authorizer is None:  # as jupyter_server_terminals does
            warn_disabled_authorization()
        elif not await ensure_async(
            authorizer.is_authorized(self, user, AUTH_ACTION, AUTH_RESOURCE)
        ):
            self._refused("no_terminal_right")
            raise web.HTTPError(
                403,
                "ssh needs the right to open a terminal (%s on %s), which this user does not have",
                AUTH_ACTION,
                AUTH_RESOURCE,
            )
        from .server import SERVICE_KEY

        service = self.settings.get(SERVICE_KEY)
        off = service.off_reason() if service is not None else None
        if off:
            self._refused("ssh_off")
            raise web.HTTPError(403, off)
        self.terminal_allowed = True

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # A refused upgrade says why, as JSON like the REST API: the client
        # prints the message (a WebSocket client sees no page).
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, web.HTTPError) and error.log_message:
            self.set_header("Content-Type", "application/json")
            message = error.log_message % error.args
            self.finish(json.dumps({"message": message, "reason": error.reason}))
            return
        super().write_error(status_code, **kwargs)


class FlowControlledProtocol(asyncio.Protocol):
    """The connection to the supervisor's port (to sshd), for one WebSocket."""

    transport: asyncio.Transport  # from connection_made, which asyncio calls first

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.reading = True
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a stream's, which reads and writes
        self.transport = transport
        self.fd = transport.get_extra_info("socket").fileno()

    def write(self, parts: list[bytes]) -> None:
        """Write parts, in order. While the transport holds nothing, several
        go to the socket with one writev (no copy to join them); what the
        kernel does not take, and everything while something waits, goes
        through the transport, so its flow control (pause_writing) sees all."""
        transport = self.transport
        if len(parts) == 1:
            transport.write(parts[0])  # asyncio sends it at once when nothing waits
            return
        if transport.get_write_buffer_size() or len(parts) > MAX_WRITEV_PARTS:
            transport.write(b"".join(parts))
            return
        try:
            sent = os.writev(self.fd, parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            transport.write(b"".join(parts))  # the connection failed: asyncio meets it
            return
        for index, part in enumerate(parts):
            if sent < len(part):
                rest: list[bytes | memoryview] = [memoryview(part)[sent:], *parts[index + 1 :]]
                transport.write(b"".join(rest))
                return
            sent -= len(part)

    def data_received(self, data: bytes) -> None:
        # (Activity is not recorded here: update_last_activity is off, and
        # activity.py counts SSH use from sshd's processes.)
        size = len(data)
        self.handler.bytes_to_client += size
        try:
            flushed = self.handler.send_binary(data)
        except (WebSocketClosedError, StreamClosedError):
            self.transport.close()
            return
        # (None: all of it is in the kernel's buffer, and nothing waits in Tornado's)
        if flushed is not None and self.reading and self.handler.unsent_to_client() > HIGH_WATER:
            self.reading = False
            self.transport.pause_reading()
            flushed.add_done_callback(self._flushed)

    def _flushed(self, future: asyncio.Future[None]) -> None:
        """Everything written to the client so far is in the kernel's buffer."""
        if not future.cancelled():
            future.exception()  # a closed WebSocket is on_close's business, not an error here
        if not self.reading and not self.transport.is_closing():
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


class FlowControl(upstream.RouteMixin):
    """Mixed in before jupyter-server-proxy's raw socket handler of the route.

    It owns the connection to the supervisor's socket (backend, protocol):
    jupyter-server-proxy's own proxy_open, on_message and on_close are
    replaced, not extended."""

    backend: asyncio.Transport | None = None
    protocol: FlowControlledProtocol | None = None
    relay_control: socket.socket | None = None  # to the relay, once handed over
    connected = False  # to sshd: through backend, or through a relay

    if TYPE_CHECKING:  # Accounted's, mixed in before this
        bytes_from_client: int
        client_version: str | None

        def _read_client_version(self, message: bytes) -> None: ...
        def _identified(self, connection_id: str) -> None: ...
        def _refused_by_supervisor(self, reason: str) -> None: ...

    @property
    def ping_interval(self) -> float:
        return self.settings.get("websocket_ping_interval") or PING_SECONDS

    @property
    def ping_timeout(self) -> float:
        return self.settings.get("websocket_ping_timeout") or self.ping_interval

    async def proxy_open(self, host: str, port: int, proxied_path: str = "") -> None:
        backend = await self._connect_supervisor()
        if backend is None:
            self.close()
            return
        if not await self._read_greeting(backend):
            backend.close()
            return
        if await self._hand_off(backend):
            self.connected = True
            return
        transport, protocol = await asyncio.get_running_loop().create_unix_connection(
            lambda: FlowControlledProtocol(self), sock=backend
        )
        self.backend, self.protocol = transport, protocol
        self.connected = True

    async def _connect_supervisor(self) -> socket.socket | None:
        """A connection to the supervisor's socket; None when nothing listens there."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + RECONNECT_SECONDS
        while True:
            backend = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            backend.setblocking(False)
            try:
                await loop.sock_connect(backend, str(self.unix_socket))
                return backend
            except OSError:
                backend.close()
                # Refused, or the socket not there yet: the supervisor is
                # being restarted after it died, and listens again within a
                # fraction of a second.
                if time.monotonic() > deadline:
                    self.log.error(
                        "jupyter-sshd-proxy: nothing listens on sshd's socket %s after %gs; "
                        "see the lines above for why the supervisor does not start",
                        self.backend_address,
                        RECONNECT_SECONDS,
                    )
                    return None
                await asyncio.sleep(0.05)

    async def _read_greeting(self, backend: socket.socket) -> bool:
        """Read the supervisor's first line (reports.py), and nothing after it.
        False when it refused the connection (the WebSocket is closing) or hung up."""
        loop = asyncio.get_running_loop()
        while True:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(backend, readable.set_result, None)
            try:
                await readable
            finally:
                loop.remove_reader(backend)
            try:
                peeked = backend.recv(reports.MAX_GREETING, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                peeked = b""
            if not peeked:
                self.close()
                return False
            read = reports.read_greeting(peeked)
            if read is None:  # not all of the line yet
                await asyncio.sleep(0.001)
                continue
            kind, value, rest = read
            backend.recv(len(peeked) - len(rest))  # the line; sshd's bytes stay
            if kind == "connection":
                self._identified(value)
            elif kind == "refused":
                self._refused_by_supervisor(value)
                return False
            return True

    async def _hand_off(self, backend: socket.socket) -> bool:
        """Give the connection to a relay process (relay.py): True if it has it.
        False, with nothing changed, where it cannot go: a TLS connection, a
        supervisor without a relay socket or with max_relays running."""
        connection = self.ws_connection
        if not isinstance(connection, frames.BulkFrameProtocol) or not connection.can_hand_off():
            return False
        loop = asyncio.get_running_loop()
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        control.setblocking(False)
        try:
            await loop.sock_connect(control, relay.relay_socket_path(str(self.unix_socket)))
            # No yes: as many relays run as the supervisor allows (max_relays),
            # or it is busy (checking sshd -T): this process relays.
            answer = await asyncio.wait_for(
                loop.sock_recv(control, len(relay.YES)), RELAY_ANSWER_SECONDS
            )
        except OSError as error:
            answer = str(error).encode()
        except asyncio.TimeoutError:
            answer = b"no answer"
        if answer != relay.YES:
            control.close()
            self.log.debug("jupyter-sshd-proxy: relaying in this process (%r)", answer)
            return False
        if not connection.can_hand_off():  # closed meanwhile
            control.close()
            return False
        client, buffered = connection.hand_off()
        hand_off = relay.HandOff(
            ping_interval=float(connection.ping_interval or 0),
            ping_timeout=float(connection.ping_timeout or 0),
            max_message_size=connection.params.max_message_size,
            buffered=len(buffered),
        )
        self.relay_control = control
        try:
            socket.send_fds(control, [hand_off.encode()], [client.fileno(), backend.fileno()])
            await loop.sock_sendall(control, buffered)
        except OSError as error:
            # The supervisor died at this moment: the connection is lost, as
            # it would have been with the supervisor's sshd.
            self.log.warning("jupyter-sshd-proxy: handing a connection over failed: %s", error)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                control.shutdown(socket.SHUT_RDWR)
        finally:
            client.close()
            backend.close()
        return True

    async def relayed(self) -> None:
        """Take the relay's reports until it ends (frames.BulkFrameProtocol
        waits for this in place of reading frames)."""
        control = self.relay_control
        assert control is not None  # set by _hand_off, before the protocol waits
        loop = asyncio.get_running_loop()
        pending = b""
        try:
            while True:
                try:
                    data = await loop.sock_recv(control, 65536)
                except OSError:
                    data = b""
                if not data:
                    return
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    self._relay_said(line)
                if len(pending) > MAX_REPORT:
                    return
        finally:
            control.close()

    def _relay_said(self, line: bytes) -> None:
        """One of the relay's lines: the bytes so far, the client's version, the end."""
        try:
            said = json.loads(line)
        except ValueError:
            return
        if not isinstance(said, dict):
            return
        for name in ("bytes_to_client", "bytes_from_client"):
            count = said.get(name)
            if isinstance(count, int) and count >= getattr(self, name):
                setattr(self, name, count)
        version = said.get("client_version")
        if isinstance(version, str) and self.client_version is None:
            self.client_version = version[:MAX_CLIENT_VERSION]
        connection = self.ws_connection
        if said.get("end") and isinstance(connection, frames.BulkFrameProtocol):
            code, reason = said.get("close_code"), said.get("close_reason")
            connection.close_code = code if isinstance(code, int) else None
            connection.close_reason = reason if isinstance(reason, str) else None

    def end_relay(self) -> None:
        """Ask the relay to close the WebSocket (it says 1001, going away)."""
        if self.relay_control is not None:
            with contextlib.suppress(OSError):
                self.relay_control.shutdown(socket.SHUT_WR)

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        # Tornado's protocol with a reader that parses the client's frames in
        # bulk and hands binary ones to relay() (frames.py).
        protocol = super().get_websocket_protocol()
        if not isinstance(protocol, WebSocketProtocol13):
            return protocol  # None: not a version Tornado speaks; it refuses the upgrade
        return frames.BulkFrameProtocol(self, False, protocol.params)

    def relay(self, messages: list[bytes]) -> None:
        """Pass bytes from the client on to sshd: the messages of one read, in order."""
        backend, protocol = self.backend, self.protocol
        if backend is None or protocol is None or backend.is_closing():
            return
        for message in messages:
            self.bytes_from_client += len(message)
            if self.client_version is None:
                self._read_client_version(message)
        protocol.write(messages)

    def writable(self) -> Any:
        """None while sshd's side takes more; else an awaitable, done when it does."""
        if self.protocol is None or self.protocol.writable.is_set():
            return None
        return self.protocol.writable.wait()

    def send_binary(self, data: bytes) -> asyncio.Future[None] | None:
        """Send data to the client: the Future of the write, None if all of
        it is in the kernel's socket buffer already."""
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            raise WebSocketClosedError
        assert isinstance(connection, frames.BulkFrameProtocol)  # get_websocket_protocol's
        return connection.send_binary(data)

    def unsent_to_client(self) -> int:
        """Bytes sent to the client that are not yet in the kernel's socket buffer."""
        connection = self.ws_connection
        if not isinstance(connection, frames.BulkFrameProtocol):
            return 0  # none yet, or closed
        return connection.unsent()

    async def on_message(self, message: str | bytes) -> None:
        # Text messages (and, with Tornado's own reader, every message).
        if isinstance(message, str):
            message = message.encode("utf-8")
        self.relay([message])
        # The next frame is read only when this returns: wait while sshd's side is full.
        wait = self.writable()
        if wait is not None:
            await wait

    def on_close(self) -> None:
        if self.backend is not None:
            self.backend.close()


class Accounted(upstream.RouteMixin):
    """Mixed in before FlowControl: the connection as the ledger sees it."""

    bytes_to_client = 0
    bytes_from_client = 0
    client_version: str | None = None
    connection_id: str | None = None
    _version: relay.VersionLine | None = None
    _accounted = False

    if TYPE_CHECKING:  # FlowControl's, mixed in after this
        connected: bool

    @property
    def ledger(self) -> Any:
        from .server import SERVICE_KEY

        service = self.settings.get(SERVICE_KEY)
        return service.ledger if service is not None else None

    def _refused(self, reason: str) -> None:
        if self.ledger is not None:
            self.ledger.route_refused(reason, hub_user(self))

    async def open(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().open(*args, **kwargs)
        except web.HTTPError:
            # sshd could not be prepared (the log has the line): the WebSocket closes.
            self._refused("sshd_cannot_start")
            raise

    async def proxy_open(self, host: str, port: int, proxied_path: str = "") -> None:
        await super().proxy_open(host, port, proxied_path)
        if self.connected and self.ledger is not None:
            self._accounted = True
            self.ledger.route_opened(self)
            if self.connection_id is not None:  # the greeting came first
                self.ledger.route_identified(self, self.connection_id, hub_user(self))

    def _identified(self, connection_id: str) -> None:
        self.connection_id = connection_id
        if self._accounted:
            self.ledger.route_identified(self, connection_id, hub_user(self))

    def _refused_by_supervisor(self, reason: str) -> None:
        self._refused(reason)
        code, why = REFUSALS.get(reason, (1011, "refused"))
        self.close(code, why)

    def _read_client_version(self, message: bytes) -> None:
        if self._version is None:
            self._version = relay.VersionLine()
        if self._version.feed(message):
            self.client_version = self._version.text

    def on_close(self) -> None:
        if self._accounted:
            self._accounted = False
            if self.client_version is None and self._version is not None:
                self.client_version = self._version.so_far()
            self.ledger.route_closed(self, self.connection_id)
        super().on_close()


class SSHDRouteHandler(AuthorizedUpgrade, Accounted, FlowControl, upstream.RawSocketRoute):
    """The /sshd/ route: jupyter-server-proxy's raw socket proxy, authorized like a
    terminal, with bounded buffers and pings, accounted for."""

    async def open(self, *args: Any, **kwargs: Any) -> None:
        # Nagle's algorithm off on the client's socket, as OpenSSH has it on its
        # own: with it on, sshd's small replies during an upload (window
        # adjustments, sftp status) each wait for the client's ACK, a round
        # trip, and uploads run at half the link's speed. Tornado turns it back
        # on when the 101 response is done, so here, after the upgrade.
        self.set_nodelay(True)
        await super().open(*args, **kwargs)


def install(web_app: web.Application, base_url: str, log: logging.Logger) -> str | None:
    """Put SSHDRouteHandler in the place of jupyter-server-proxy's /sshd/ handler.

    None when done; otherwise why not, in one line, which is also logged."""
    problem = upstream.problem()
    if problem is None and not upstream.replace_route(
        web_app, url_path_join(base_url, ROUTE_NAME, "(.*)"), SSHDRouteHandler
    ):
        problem = (
            f"jupyter-server-proxy's {url_path_join(base_url, ROUTE_NAME)}/ route was not "
            "found, so sshd will not be started (it would not be limited to users who may "
            "open a terminal); check that jupyter_server_proxy is installed and enabled "
            "(jupyter server extension list)"
        )
    if problem:
        log.error("jupyter-sshd-proxy: %s", problem)
    return problem
