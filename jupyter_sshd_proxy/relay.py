"""Relay one /sshd/ WebSocket between its client and sshd, in a process of its own.

The Jupyter server's route authorizes the upgrade, answers it, connects to
the supervisor's socket and reads the connection's id (route.py). Then,
on a plain (not TLS) connection, it hands both sockets over: the client's
TCP socket and its connection to sshd go, with the bytes of the client that
Tornado had read already, through the supervisor's relay socket (a unix
socket next to its own, SCM_RIGHTS). The supervisor forks; the child is this
module's Relay, one process per connection. From then on the Jupyter server
does not touch the connection's bytes: its event loop, which serves the
user's notebooks, is free while ssh moves data, and parallel transfers run
on as many cores as there are connections.

The relay speaks the server's side of RFC 6455 on the client's socket (the
client's frames parsed in bulk by wsframes.ClientFrames, as the route does;
pongs to pings, the close handshake, pings every ping_interval and the end
when no pong comes within ping_timeout, as Tornado does) and passes bytes
both ways with at most one read (READ_SIZE) waiting per direction: it reads
from one side only when everything read before has been written to the
other, so TCP pushes back on whichever side is faster.

It tells the route, on the relay socket, as JSON lines: the bytes each way
(at most once a second, when they changed), the client's version line, and
at the end how the WebSocket closed. The route ends when that connection
ends; closing it from the route's side ends the relay (the Jupyter server
stopping: close code 1001).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass

from .wsframes import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    READ_SIZE,
    TEXT,
    ClientFrames,
    FrameError,
    server_header,
)

YES = b"+"  # the supervisor's answer on the relay socket: a relay takes the connection
RELAY_SOCKET = "relay"  # its name, in the directory of the supervisor's socket
HANDOFF_SECONDS = 5.0  # for the route to send everything of the hand-off
CLOSE_SECONDS = 5.0  # for the client to answer our close frame (as Tornado waits)
# ... when the server is going away: the supervisor ends what is left after
# STOP_GRACE (3 s), and a client with a backlog of frames before its answer
# should not hold it that long.
GOING_AWAY_SECONDS = 1.0
REPORT_SECONDS = 1.0
MAX_HEADER = 4096
# The client's bytes Tornado had read before the hand-off: a few reads at most
# (it stops reading while sshd is slower); more is not the route's.
MAX_BUFFERED = 16 * 1024 * 1024
MAX_CLIENT_VERSION = 255  # bytes of the client's version line that are kept (RFC 4253: 255)
GOING_AWAY = 1001


def relay_socket_path(socket_path: str) -> str:
    """The supervisor's relay socket, beside its socket (in the same private directory)."""
    return os.path.join(os.path.dirname(socket_path), RELAY_SOCKET)


def log(message: str) -> None:
    print(f"jupyter-sshd-proxy: relay: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class HandOff:
    """What the route tells the relay with the two sockets (one JSON line)."""

    ping_interval: float  # seconds; 0: no pings
    ping_timeout: float
    max_message_size: int
    buffered: int  # bytes of the client's, read by Tornado already, that follow the line

    def encode(self) -> bytes:
        return json.dumps(self.__dict__).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> HandOff:
        """Raises ValueError for anything but the line encode() writes."""
        fields = json.loads(line)
        if not isinstance(fields, dict) or set(fields) != set(cls.__dataclass_fields__):
            msg = "not a hand-off"
            raise ValueError(msg)
        numbers = [fields["ping_interval"], fields["ping_timeout"]]
        sizes = [fields["max_message_size"], fields["buffered"]]
        if not all(isinstance(n, (int, float)) and 0 <= n < 1e6 for n in numbers):
            msg = "bad ping times"
            raise ValueError(msg)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
            msg = "bad sizes"
            raise ValueError(msg)
        if fields["buffered"] > MAX_BUFFERED:
            msg = f"{fields['buffered']} buffered bytes, more than {MAX_BUFFERED}"
            raise ValueError(msg)
        return cls(**fields)


class VersionLine:
    """The client's first line (RFC 4253: "SSH-2.0-softwareversion comments"),
    which comes before anything encrypted; kept as text, at most 255 bytes."""

    def __init__(self) -> None:
        self.text: str | None = None
        self._start = b""

    def feed(self, data: bytes) -> bool:
        """Take bytes the client sent; True once the line is known."""
        if self.text is not None:
            return True
        start = self._start + data[: MAX_CLIENT_VERSION + 2]
        end = start.find(b"\n")
        if end < 0 and len(start) <= MAX_CLIENT_VERSION:
            self._start = start
            return False
        line = start[:end] if end >= 0 else start
        self.text = line[:MAX_CLIENT_VERSION].rstrip(b"\r").decode("utf-8", "replace")
        self._start = b""
        return True

    def so_far(self) -> str | None:
        """The line, or what came of it before the connection ended."""
        if self.text is None and self._start:
            return self._start.decode("utf-8", "replace")
        return self.text


def receive_hand_off(control: socket.socket) -> tuple[HandOff, socket.socket, socket.socket, bytes]:
    """Read the hand-off from the route: (what it says, client, backend, the
    client's bytes Tornado had read). Raises ValueError or OSError."""
    deadline = time.monotonic() + HANDOFF_SECONDS
    control.settimeout(HANDOFF_SECONDS)
    data, fds, _flags, _address = socket.recv_fds(control, MAX_HEADER, 2)
    sockets = []
    try:
        if len(fds) != 2:
            msg = f"{len(fds)} file descriptors, not 2"
            raise ValueError(msg)
        for fd in fds:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                msg = "a file descriptor that is not a socket"
                raise ValueError(msg)
        while b"\n" not in data:
            if len(data) >= MAX_HEADER or time.monotonic() > deadline:
                msg = "no hand-off line"
                raise ValueError(msg)
            more = control.recv(MAX_HEADER - len(data))
            if not more:
                msg = "the route hung up"
                raise ValueError(msg)
            data += more
        line, _, buffered = data.partition(b"\n")
        hand_off = HandOff.decode(line)
        while len(buffered) < hand_off.buffered:
            left = deadline - time.monotonic()
            try:
                if left <= 0:  # (a timeout of 0 would make the socket non-blocking)
                    raise socket.timeout
                control.settimeout(left)
                more = control.recv(min(READ_SIZE, hand_off.buffered - len(buffered)))
            except socket.timeout:  # (TimeoutError from Python 3.10)
                msg = f"not all {hand_off.buffered} buffered bytes within {HANDOFF_SECONDS:g} s"
                raise ValueError(msg) from None
            if not more:
                msg = "the route hung up"
                raise ValueError(msg)
            buffered += more
        if len(buffered) != hand_off.buffered:
            msg = "more bytes than the hand-off said"
            raise ValueError(msg)
        sockets = [socket.socket(fileno=fd) for fd in fds]
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    control.setblocking(False)
    client, backend = sockets
    return hand_off, client, backend, buffered


class Relay:
    """One connection: client (WebSocket) <-> backend (sshd), reports on control."""

    def __init__(
        self,
        client: socket.socket,
        backend: socket.socket,
        control: socket.socket,
        hand_off: HandOff,
        stop: int | None = None,
    ) -> None:
        self.client, self.backend, self.control = client, backend, control
        self.stop = stop  # readable once SIGTERM came (signal.set_wakeup_fd's pipe)
        for sock in (client, backend, control):
            sock.setblocking(False)
        self.ping_interval = hand_off.ping_interval
        self.ping_timeout = hand_off.ping_timeout
        self.parser = ClientFrames(hand_off.max_message_size)
        self.received = bytearray(READ_SIZE)
        self.to_backend: list[bytes | memoryview] = []
        self.to_client: list[bytes | memoryview] = []
        # The payload of the latest ping not yet answered: one at most, however
        # many pings a client that reads nothing sends.
        self.pong: bytes | None = None
        self.to_control = b""
        self.bytes_from_client = 0
        self.bytes_to_client = 0
        self.version = VersionLine()
        self.version_reported = False
        self.reported = (0, 0)
        now = time.monotonic()
        self.report_at = now + REPORT_SECONDS
        self.ping_at = now + self.ping_interval if self.ping_interval > 0 else None
        self.pong_by: float | None = None
        # How it ends: a close frame sent (with its code and reason), when to give up
        # waiting for the client's, and whether the client has closed.
        self.close_sent: tuple[int | None, str] | None = None
        self.close_received: tuple[int | None, str] | None = None
        self.give_up_at: float | None = None
        self.client_done = False  # the client's close frame came, or its end
        self.backend_done = False  # sshd's side ended

    def feed_client(self, data: bytes | memoryview) -> None:
        """The client's bytes (also those Tornado had read)."""
        try:
            messages = self.parser.feed(data)
            failure = None
        except FrameError as error:
            messages, failure = error.messages, error
        for opcode, payload in messages:
            if opcode in (BINARY, TEXT):
                if self.close_received is None and not self.backend_done:
                    self.to_backend.append(payload)
                    self.bytes_from_client += len(payload)
                    if not self.version_reported and self.version.feed(payload):
                        self._report_version()
            elif opcode == PING:
                self.pong = payload
            elif opcode == PONG:
                self.pong_by = None
            elif opcode == CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.close_received = (code, payload[2:].decode("utf-8"))
                self.client_done = True
                self.send_close(code, "")  # echoed, as Tornado does (RFC 6455, 5.5.1)
        if failure is not None:
            self.send_close(failure.code, failure.reason)
            self.client_done = True  # nothing more is read after a protocol error

    def send_close(self, code: int | None, reason: str) -> None:
        if self.close_sent is not None:
            return
        body = b"" if code is None else code.to_bytes(2, "big") + reason.encode()
        self.to_client += [server_header(CLOSE, len(body)), body]
        self.close_sent = (code, reason)
        self.give_up_at = time.monotonic() + CLOSE_SECONDS

    def going_away(self, reason: str) -> None:
        self.send_close(GOING_AWAY, reason)
        assert self.give_up_at is not None
        self.give_up_at = min(self.give_up_at, time.monotonic() + GOING_AWAY_SECONDS)

    def _report(self, **fields: object) -> None:
        self.to_control += json.dumps(fields).encode() + b"\n"

    def _report_version(self) -> None:
        self.version_reported = True
        self._report(client_version=self.version.text)

    def _report_bytes(self, now: float) -> None:
        counts = (self.bytes_to_client, self.bytes_from_client)
        if counts != self.reported:
            self.reported = counts
            self._report(bytes_to_client=counts[0], bytes_from_client=counts[1])
        self.report_at = now + REPORT_SECONDS

    @property
    def finished(self) -> bool:
        """Nothing more to do: both ends closed and everything written, or
        the time given for that is over (a client that reads nothing more)."""
        if self.close_sent is None:
            return False
        if self.give_up_at is not None and time.monotonic() >= self.give_up_at:
            return True
        return (
            self.client_done and not self.to_client and (not self.to_backend or self.backend_done)
        )

    def run(self) -> None:
        poller = select.poll()
        while not self.finished:
            self._step(poller)
        self._end()

    def _step(self, poller: select.poll) -> None:
        now = time.monotonic()
        if now >= self.report_at:
            self._report_bytes(now)
        if self.ping_at is not None and now >= self.ping_at and self.close_sent is None:
            self.to_client += [server_header(PING, 0), b""]
            self.ping_at = now + self.ping_interval
            if self.ping_timeout > 0 and self.pong_by is None:
                self.pong_by = now + self.ping_timeout
        if self.pong_by is not None and now >= self.pong_by and self.close_sent is None:
            self.send_close(1000, "ping timed out")
        if self.pong is not None and self.close_sent is None and not self.to_client:
            self.to_client += [server_header(PONG, len(self.pong)), self.pong]
            self.pong = None
        if self.parser.backlog and not self.to_backend and not self.client_done:
            self.feed_client(b"")  # frames of the last read, still to be handled
        client_events = backend_events = control_events = 0
        reading_client = not self.client_done and not self.to_backend and not self.parser.backlog
        if reading_client:
            client_events |= select.POLLIN
        if self.to_client:
            client_events |= select.POLLOUT
        if not self.backend_done:
            if not self.to_client and self.close_sent is None:
                backend_events |= select.POLLIN
            if self.to_backend:
                backend_events |= select.POLLOUT
        control_events = select.POLLIN | (select.POLLOUT if self.to_control else 0)
        for sock, events in (
            (self.client, client_events),
            (self.backend, backend_events),
            (self.control, control_events),
        ):
            if events:
                poller.register(sock, events)
            else:
                with contextlib.suppress(KeyError):
                    poller.unregister(sock)
        if self.stop is not None:
            poller.register(self.stop, select.POLLIN)
        ready = dict(poller.poll(self._timeout(now) * 1000))
        if self.stop is not None and self.stop in ready:
            # The supervisor is stopping (or has died): sshd goes too.
            poller.unregister(self.stop)
            self.stop = None
            self.going_away("the server is stopping")
        failed = select.POLLERR | select.POLLHUP | select.POLLNVAL
        if ready.get(self.control.fileno(), 0) & (select.POLLIN | failed):
            self._read_control()
        if ready.get(self.control.fileno(), 0) & select.POLLOUT:
            self._write_control()
        if ready.get(self.backend.fileno(), 0) & select.POLLOUT:
            self._write_backend()
        if ready.get(self.client.fileno(), 0) & select.POLLOUT:
            self._write_client()
        if ready.get(self.backend.fileno(), 0) & (select.POLLIN | failed):
            self._read_backend()
        if ready.get(self.client.fileno(), 0) & (select.POLLIN | failed) and reading_client:
            self._read_client()

    def _timeout(self, now: float) -> float:
        if self.parser.backlog and not self.to_backend and not self.client_done:
            return 0.0  # frames of the last read are still to be handled: no waiting
        moments = [self.report_at, self.ping_at, self.pong_by, self.give_up_at]
        soonest = min(moment for moment in moments if moment is not None)
        return max(0.0, soonest - now) + 0.001

    def _read_client(self) -> None:
        try:
            size = self.client.recv_into(self.received)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset: nothing more comes, and nothing reaches it
            self._client_gone(failed=True)
            return
        if not size:
            self._client_gone()
            return
        with memoryview(self.received) as view, view[:size] as chunk:
            self.feed_client(chunk)
        if self.to_backend and not self.backend_done:
            self._write_backend()  # at once: sshd has room more often than not

    def _read_backend(self) -> None:
        try:
            data = self.backend.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.backend_done = True  # sshd has exited: the WebSocket closes
            self.send_close(None, "")
            return
        self.bytes_to_client += len(data)
        self.to_client += [server_header(BINARY, len(data)), data]
        self._write_client()  # at once, as above

    def _write_client(self) -> None:
        if not _send(self.client, self.to_client):
            self._client_gone(failed=True)

    def _client_gone(self, failed: bool = False) -> None:
        """Gone without a close frame. After an end of file what it sent still
        goes to sshd, for a while (CLOSE_SECONDS: sshd may be reading
        nothing); after a failed socket (a reset) there is nobody to finish
        the session for, and the relay ends at once."""
        self.client_done = True
        self.to_client.clear()
        if self.close_sent is None:
            self.close_sent = (None, "")
            self.give_up_at = time.monotonic() + CLOSE_SECONDS
        if failed:
            self.give_up_at = time.monotonic()

    def _write_backend(self) -> None:
        if not _send(self.backend, self.to_backend):
            self.to_backend.clear()
            self.backend_done = True
            self.send_close(None, "")

    def _read_control(self) -> None:
        try:
            data = self.control.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the Jupyter server is stopping, or its route closed us
            self.going_away("the Jupyter server closed the connection")

    def _write_control(self) -> None:
        try:
            sent = self.control.send(self.to_control)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(self.to_control)  # the route is gone: nobody to tell
        self.to_control = self.to_control[sent:]

    def _end(self) -> None:
        # shutdown, not only close: the connection ends even where another
        # process still holds the socket (the route, until it has closed it).
        for sock in (self.backend, self.client):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if not self.version_reported and self.version.so_far() is not None:
            self.version.text = self.version.so_far()
            self._report_version()
        code, reason = self.close_received or (None, "")
        self._report_bytes(time.monotonic())
        self._report(end=True, close_code=code, close_reason=reason)
        self.control.setblocking(True)
        self.control.settimeout(1.0)
        with contextlib.suppress(OSError):
            self.control.sendall(self.to_control)
        self.control.close()


def _send(sock: socket.socket, parts: list[bytes | memoryview]) -> bool:
    """Write as much of parts as the socket takes now, removing what it took.
    False when the connection has failed."""
    try:
        sent = sock.sendmsg(parts[:1024])  # IOV_MAX
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    while sent:
        first = parts[0]
        if sent < len(first):
            parts[0] = memoryview(first)[sent:]
            return True
        sent -= len(first)
        del parts[0]
    while parts and not len(parts[0]):
        del parts[0]
    return True


def serve(control: socket.socket) -> int:
    """The relay child's work: take the hand-off on control, relay until the end."""
    try:
        hand_off, client, backend, buffered = receive_hand_off(control)
    except (OSError, ValueError) as error:
        log(f"refused a hand-off: {error}")
        return 1
    # SIGTERM (the supervisor stopping, or dying: PR_SET_PDEATHSIG) closes the
    # WebSocket with a word, as sshd's end would, rather than cutting it.
    stop, woken = os.pipe()
    for fd in (stop, woken):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(woken)
    signal.signal(signal.SIGTERM, lambda *_: None)
    relay = Relay(client, backend, control, hand_off, stop)
    if buffered:
        relay.feed_client(buffered)
    relay.run()
    return 0
