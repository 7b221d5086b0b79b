"""The relay (relay.py) on socket pairs: a real RFC 6455 client side
(websockets' Sans-I/O protocol) on one end, bytes for sshd on the other, the
route's reports on the third. No process, no network."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import OPEN, Protocol, Side

from jupyter_sshd_proxy import relay
from jupyter_sshd_proxy.relay import HandOff, Relay, VersionLine

MAX = 10 * 1024 * 1024


def hand_off(**changes: object) -> HandOff:
    fields: dict = {"ping_interval": 0.0, "ping_timeout": 0.0, "max_message_size": MAX}
    fields.update({"buffered": 0, **changes})
    return HandOff(**fields)


class Ends:
    """A relay running in a thread, and the three other ends of its sockets."""

    def __init__(self, stop: int | None = None, **changes: object) -> None:
        self.client, client = socket.socketpair()
        self.sshd, backend = socket.socketpair()
        self.route, control = socket.socketpair()
        for sock in (self.client, self.sshd, self.route):
            sock.settimeout(10)
        self.protocol = Protocol(Side.CLIENT, state=OPEN, max_size=None)
        self.relay = Relay(client, backend, control, hand_off(**changes), stop)
        self.thread = threading.Thread(target=self.relay.run, daemon=True)

    def start(self, buffered: bytes = b"") -> Ends:
        if buffered:
            self.relay.feed_client(buffered)
        self.thread.start()
        return self

    def send(self, frame: Frame) -> None:
        self.client.sendall(Frame.serialize(frame, mask=True, extensions=[]))

    def frames(self, until_close: bool = True) -> list[Frame]:
        """What the relay sends the client, until its close frame (or the end)."""
        got: list[Frame] = []
        while True:
            data = self.client.recv(65536)
            self.protocol.receive_data(data) if data else self.protocol.receive_eof()
            got += [f for f in self.protocol.events_received() if isinstance(f, Frame)]
            if not data or (until_close and any(f.opcode == Opcode.CLOSE for f in got)):
                return got

    def from_sshd_side(self, size: int) -> bytes:
        """Exactly size bytes that the relay wrote to sshd."""
        got = b""
        while len(got) < size:
            chunk = self.sshd.recv(size - len(got))
            assert chunk, f"the relay ended after {got!r}"
            got += chunk
        return got

    def close(self) -> None:
        for sock in (self.client, self.sshd, self.route):
            sock.close()
        self.thread.join(10)

    def reports(self) -> list[dict]:
        """Every line the relay told the route, up to its end."""
        data = b""
        while chunk := self.route.recv(65536):
            data += chunk
        self.thread.join(10)
        assert not self.thread.is_alive()
        return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
def make_ends():
    made: list[Ends] = []

    def make(stop: int | None = None, **changes: object) -> Ends:
        made.append(Ends(stop, **changes))
        return made[-1]

    yield make
    for ends in made:
        ends.close()


def test_bytes_pass_both_ways_and_the_route_hears_of_them(make_ends):
    ends = make_ends().start()
    ends.send(Frame(Opcode.BINARY, b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n"))
    ends.send(Frame(Opcode.BINARY, b"x" * 100_000))
    wanted = 30 + 100_000
    got = b""
    while len(got) < wanted:
        got += ends.sshd.recv(wanted - len(got))
    assert got == b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n" + b"x" * 100_000
    ends.sshd.sendall(b"SSH-2.0-OpenSSH_9.2\r\n" + b"y" * 300_000)
    ends.sshd.close()  # sshd exits: the WebSocket closes
    frames = ends.frames()
    data = b"".join(f.data for f in frames if f.opcode == Opcode.BINARY)
    assert data == b"SSH-2.0-OpenSSH_9.2\r\n" + b"y" * 300_000
    assert frames[-1].opcode == Opcode.CLOSE
    assert frames[-1].data == b""  # as Tornado's close()
    ends.send(Frame(Opcode.CLOSE, Close(1000, "").serialize()))
    reports = ends.reports()
    assert reports[0] == {"client_version": "SSH-2.0-OpenSSH_9.2p1 Debian"}
    assert reports[-1] == {"end": True, "close_code": 1000, "close_reason": ""}
    assert reports[-2] == {"bytes_to_client": 300_021, "bytes_from_client": 100_030}


def test_the_clients_close_is_echoed_and_sshd_sees_the_end(make_ends):
    ends = make_ends().start()
    ends.send(Frame(Opcode.BINARY, b"last words"))
    ends.send(Frame(Opcode.CLOSE, Close(1001, "bye").serialize()))
    frames = ends.frames()
    assert [(f.opcode, f.data) for f in frames] == [(Opcode.CLOSE, struct.pack("!H", 1001))]
    got = b""
    while chunk := ends.sshd.recv(65536):
        got += chunk
    assert got == b"last words"
    assert ends.reports()[-1] == {"end": True, "close_code": 1001, "close_reason": "bye"}


def test_bytes_tornado_had_read_come_first(make_ends):
    early = Frame(Opcode.BINARY, b"early").serialize(mask=True, extensions=[])
    ends = make_ends().start(buffered=early[:4])  # a frame cut where Tornado's read ended
    ends.client.sendall(early[4:])
    ends.send(Frame(Opcode.BINARY, b" later"))
    assert ends.from_sshd_side(11) == b"early later"
    ends.client.close()
    ends.reports()


def test_pings_are_answered_and_sent(make_ends):
    ends = make_ends(ping_interval=0.2, ping_timeout=0.2).start()
    ends.send(Frame(Opcode.PING, b"are you there"))
    frames: list[Frame] = []
    while not any(f.opcode == Opcode.PING for f in frames):
        ends.protocol.receive_data(ends.client.recv(65536))
        frames += [f for f in ends.protocol.events_received() if isinstance(f, Frame)]
    assert (Opcode.PONG, b"are you there") in [(f.opcode, f.data) for f in frames]
    # No pong from here: the relay closes as Tornado does, "ping timed out".
    frames = ends.frames()
    assert frames[-1].opcode == Opcode.CLOSE
    assert frames[-1].data == struct.pack("!H", 1000) + b"ping timed out"
    ends.client.close()
    ends.reports()


def test_a_protocol_error_closes_with_its_code_after_what_came_before(make_ends):
    ends = make_ends().start()
    ends.send(Frame(Opcode.BINARY, b"fine"))
    ends.client.sendall(b"\x82\x04none")  # not masked: 1002
    frames = ends.frames()
    assert (
        frames[-1].data == struct.pack("!H", 1002) + b"a frame from the client that is not masked"
    )
    assert ends.from_sshd_side(4) == b"fine"
    ends.client.close()
    assert ends.reports()[-1]["end"] is True


def test_the_route_going_away_closes_with_1001(make_ends):
    ends = make_ends().start()
    ends.route.shutdown(socket.SHUT_WR)  # the Jupyter server stopping
    frames = ends.frames()
    assert frames[-1].data == struct.pack("!H", 1001) + b"the Jupyter server closed the connection"
    ends.client.close()
    ends.reports()


def test_sigterm_closes_with_1001_after_what_sshd_sent(make_ends):
    stop, woken = os.pipe()
    try:
        ends = make_ends(stop=stop).start()
        ends.sshd.sendall(b"last output")
        assert ends.client.recv(13) == b"\x82\x0blast output"
        os.write(woken, b"\x0f")  # what signal.set_wakeup_fd writes for SIGTERM
        frames = ends.frames()
        assert frames[-1].data == struct.pack("!H", 1001) + b"the server is stopping"
        ends.client.close()
        ends.reports()
    finally:
        os.close(stop)
        os.close(woken)


def test_going_away_waits_a_second_for_the_clients_answer(make_ends, monkeypatch):
    """Not CLOSE_SECONDS: the supervisor ends what is left after 3 s."""
    monkeypatch.setattr(relay, "CLOSE_SECONDS", 30.0)
    ends = make_ends().start()
    started = time.monotonic()
    ends.route.shutdown(socket.SHUT_WR)
    assert ends.reports()[-1] == {"end": True, "close_code": None, "close_reason": ""}
    assert time.monotonic() - started < relay.GOING_AWAY_SECONDS + 2


def test_a_client_that_vanishes_ends_the_relay_and_sshds_connection(make_ends):
    ends = make_ends().start()
    ends.send(Frame(Opcode.BINARY, b"partial"))
    ends.client.close()
    got = b""
    while chunk := ends.sshd.recv(65536):
        got += chunk
    assert got == b"partial"
    assert ends.reports()[-1] == {"end": True, "close_code": None, "close_reason": ""}


def test_a_stopped_sshd_stops_the_reading_of_the_client(make_ends):
    """sshd reads nothing: the relay holds one read at most, and TCP (here
    the socket pair's buffers) pushes back on the client."""
    ends = make_ends()
    for sock in (ends.client, ends.relay.client, ends.sshd, ends.relay.backend):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    ends.start()
    ends.client.setblocking(False)
    frame = Frame(Opcode.BINARY, os.urandom(16384)).serialize(mask=True, extensions=[])
    sent = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        try:
            sent += ends.client.send(frame)
        except BlockingIOError:
            time.sleep(0.05)
    assert 0 < sent < 4 * 65536 + relay.READ_SIZE + len(frame) * 2
    ends.client.close()
    ends.sshd.close()
    ends.reports()


def small_buffers(ends: Ends) -> None:
    for sock in (ends.client, ends.relay.client, ends.sshd, ends.relay.backend):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)


def send_for(sock: socket.socket, data: bytes, seconds: float) -> int:
    """Send data again and again for seconds, as much as sock takes; bytes sent."""
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sent += sock.send(data)
        except BlockingIOError:
            time.sleep(0.01)
    return sent


def test_a_client_that_pings_and_reads_nothing_gets_one_pong_waiting(make_ends):
    ends = make_ends()
    small_buffers(ends)
    ends.start()
    ping = Frame(Opcode.PING, b"p" * 125).serialize(mask=True, extensions=[])
    assert send_for(ends.client, ping * 64, 1.5) > 4 * 65536  # read by the relay
    waiting = sum(len(part) for part in list(ends.relay.to_client))
    assert waiting <= 2 + 125  # one pong, not one per read
    ends.client.close()
    ends.reports()


def test_frames_past_one_turns_worth_are_handled_without_waiting(make_ends):
    """Thousands of empty fragments in one read: the relay parses them in
    turns of MAX_FRAMES_PER_FEED, and does not wait for the next report (1 s)
    between turns."""
    ends = make_ends().start()
    fragments = [Frame(Opcode.BINARY, b"", fin=False)]
    fragments += [Frame(Opcode.CONT, b"", fin=False)] * 5000
    fragments += [Frame(Opcode.CONT, b"end")]
    ends.client.sendall(b"".join(f.serialize(mask=True, extensions=[]) for f in fragments))
    ends.sshd.settimeout(4)  # 20 turns: 20 s if each waited
    assert ends.from_sshd_side(3) == b"end"
    ends.client.close()
    ends.reports()


def test_a_client_gone_while_sshd_reads_nothing_ends_the_relay(make_ends, monkeypatch):
    """Its bytes wait for sshd, so the relay reads nothing of the client; the
    failed write of sshd's next output says it is gone."""
    monkeypatch.setattr(relay, "CLOSE_SECONDS", 0.2)
    ends = make_ends()
    small_buffers(ends)
    ends.start()
    frame = Frame(Opcode.BINARY, os.urandom(16384)).serialize(mask=True, extensions=[])
    send_for(ends.client, frame, 1.0)
    assert ends.relay.to_backend  # waiting for sshd
    ends.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ends.client.close()
    ends.sshd.sendall(b"output")
    assert ends.reports()[-1] == {"end": True, "close_code": None, "close_reason": ""}


def test_the_version_line_is_kept_to_255_bytes():
    line = VersionLine()
    assert not line.feed(b"SSH-2.0-")
    assert line.so_far() == "SSH-2.0-"
    assert line.feed(b"x" * 400)
    assert line.text == "SSH-2.0-" + "x" * 247


@pytest.mark.parametrize(
    "line",
    [
        b"[]",
        b"{}",
        b'{"ping_interval": 1, "ping_timeout": 1, "max_message_size": 1}',
        b'{"ping_interval": "1", "ping_timeout": 1, "max_message_size": 1, "buffered": 0}',
        b'{"ping_interval": 1, "ping_timeout": 1, "max_message_size": true, "buffered": 0}',
        b'{"ping_interval": 1, "ping_timeout": 1, "max_message_size": 1, "buffered": -1}',
        b'{"ping_interval": 1, "ping_timeout": 1, "max_message_size": 1, "buffered": 0, "x": 1}',
        b'{"ping_interval": 1, "ping_timeout": 1, "max_message_size": 1, "buffered": 16777217}',
    ],
)
def test_a_hand_off_line_other_than_the_routes_is_refused(line):
    with pytest.raises(ValueError):  # noqa: PT011  # any of the reasons
        HandOff.decode(line)


def test_a_hand_off_round_trips():
    sent = hand_off(ping_interval=30.0, ping_timeout=30.0, buffered=3)
    assert HandOff.decode(sent.encode().rstrip(b"\n")) == sent


def test_a_hand_off_without_two_sockets_is_refused():
    route, control = socket.socketpair()
    read, write = os.pipe()
    try:
        socket.send_fds(route, [hand_off().encode()], [read, write])
        with pytest.raises(ValueError, match="not a socket"):
            relay.receive_hand_off(control)
        route.sendall(hand_off().encode())
        with pytest.raises(ValueError, match="0 file descriptors, not 2"):
            relay.receive_hand_off(control)
    finally:
        for fd in (read, write):
            os.close(fd)
        route.close()
        control.close()


def test_a_hand_off_takes_the_sockets_and_the_bytes():
    route, control = socket.socketpair()
    client, backend = socket.socketpair()
    try:
        socket.send_fds(
            route, [hand_off(buffered=5).encode() + b"ab"], [client.fileno(), backend.fileno()]
        )
        route.sendall(b"cde")
        said, got_client, got_backend, buffered = relay.receive_hand_off(control)
        assert said == hand_off(buffered=5)
        assert buffered == b"abcde"
        got_client.sendall(b"through")
        assert backend.recv(7) == b"through"
        got_client.close()
        got_backend.close()
    finally:
        for sock in (route, control, client, backend):
            sock.close()


def test_a_hand_off_whose_bytes_keep_coming_ends_at_its_deadline(monkeypatch):
    monkeypatch.setattr(relay, "HANDOFF_SECONDS", 0.3)
    route, control = socket.socketpair()
    client, backend = socket.socketpair()
    stop = threading.Event()

    def trickle() -> None:
        with contextlib.suppress(OSError):
            while not stop.wait(0.01):
                route.sendall(b"x" * 1024)

    try:
        socket.send_fds(
            route,
            [hand_off(buffered=relay.MAX_BUFFERED).encode()],
            [client.fileno(), backend.fileno()],
        )
        feeder = threading.Thread(target=trickle, daemon=True)
        feeder.start()
        started = time.monotonic()
        with pytest.raises(ValueError, match=r"^not all 16777216 buffered bytes within 0\.3 s$"):
            relay.receive_hand_off(control)
        assert time.monotonic() - started < 2
    finally:
        stop.set()
        for sock in (route, control, client, backend):
            sock.close()
