"""The route's bulk frame reader (frames.py), fed real bytes: frames serialized
by websockets (a client's, masked with random keys) and, for what no client
library sends, by hand. No I/O: these run in milliseconds."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import tracemalloc

import pytest
from tornado.iostream import IOStream
from tornado.websocket import WebSocketProtocol13, _WebSocketParams
from websockets.frames import Frame, Opcode

from jupyter_sshd_proxy import frames, wsframes
from jupyter_sshd_proxy.wsframes import ClientFrames, FrameError

MAX = 10 * 1024 * 1024  # tornado's websocket_max_message_size


def client_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    """A frame as a websockets client puts it on the wire: masked, random key."""
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


def unmasked(first: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", first, length) + payload
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + payload
    return struct.pack("!BBQ", first, 127, length) + payload


def feed_in_pieces(parser: ClientFrames, wire: bytes, size: int) -> list[tuple[int, bytes]]:
    out = []
    for start in range(0, len(wire), size):
        out += parser.feed(wire[start : start + size])
    return out


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_each_length_encoding_in_one_read(length):
    data = os.urandom(length)
    assert ClientFrames(MAX).feed(client_frame(Opcode.BINARY, data)) == [(wsframes.BINARY, data)]


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1000, 65536, 262144])
def test_many_frames_split_anywhere(piece):
    messages = [os.urandom(n) for n in (0, 5, 125, 126, 4000, 65536, 70000, 1)]
    wire = b"".join(client_frame(Opcode.BINARY, m) for m in messages)
    got = feed_in_pieces(ClientFrames(MAX), wire, piece)
    assert got == [(wsframes.BINARY, m) for m in messages]


def test_fragmented_message_is_joined_with_control_frames_between():
    wire = (
        client_frame(Opcode.BINARY, b"SSH-2.0-", fin=False)
        + client_frame(Opcode.PING, b"are you there")
        + client_frame(Opcode.CONT, b"OpenSSH", fin=False)
        + client_frame(Opcode.PONG, b"")
        + client_frame(Opcode.CONT, b"_9.9\r\n", fin=True)
        + client_frame(Opcode.TEXT, "é".encode())
        + client_frame(Opcode.CLOSE, struct.pack("!H", 1000) + b"bye")
    )
    for piece in (1, 5, len(wire)):
        assert feed_in_pieces(ClientFrames(MAX), wire, piece) == [
            (wsframes.PING, b"are you there"),
            (wsframes.PONG, b""),
            (wsframes.BINARY, b"SSH-2.0-OpenSSH_9.9\r\n"),
            (wsframes.TEXT, "é".encode()),
            (wsframes.CLOSE, b"\x03\xe8bye"),
        ]


def test_nothing_comes_out_before_a_frame_is_complete():
    parser = ClientFrames(MAX)
    wire = client_frame(Opcode.BINARY, b"x" * 1000)
    assert parser.feed(wire[:-1]) == []
    assert parser.feed(wire[-1:]) == [(wsframes.BINARY, b"x" * 1000)]
    assert parser.feed(b"") == []


def test_a_frame_that_is_not_masked_is_refused():
    with pytest.raises(FrameError) as refused:
        ClientFrames(MAX).feed(unmasked(0x82, b"hello"))
    assert (refused.value.code, refused.value.reason) == (
        1002,
        "a frame from the client that is not masked",
    )


def test_unmasked_frames_where_masking_is_not_asked():
    parser = ClientFrames(MAX, masked=False)
    wire = unmasked(0x82, b"a" * 70000) + unmasked(0x89, b"p") + unmasked(0x81, b"t")
    assert feed_in_pieces(parser, wire, 999) == [
        (wsframes.BINARY, b"a" * 70000),
        (wsframes.PING, b"p"),
        (wsframes.TEXT, b"t"),
    ]


def test_a_message_over_the_limit_is_refused_by_its_header():
    parser = ClientFrames(1000)
    header = client_frame(Opcode.BINARY, bytes(1001))[:8]  # 2 + 2 length + 4 mask
    with pytest.raises(FrameError) as refused:
        parser.feed(header)  # not one byte of its payload has come
    assert (refused.value.code, refused.value.reason) == (1009, "message too big")
    assert ClientFrames(1000).feed(client_frame(Opcode.BINARY, bytes(1000)))[0][1] == bytes(1000)


def test_fragments_over_the_limit_together_are_refused():
    parser = ClientFrames(1000)
    parser.feed(client_frame(Opcode.BINARY, bytes(600), fin=False))
    with pytest.raises(FrameError) as refused:
        parser.feed(client_frame(Opcode.CONT, bytes(401)))
    assert refused.value.code == 1009


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (unmasked(0x89, bytes(126)), "a control frame of more than 125 bytes"),
        (unmasked(0x09, b"ping"), "a fragmented control frame"),
        (unmasked(0x80, b"x"), "a continuation frame with no message to continue"),
        (
            unmasked(0x02, b"x") + unmasked(0x82, b"y"),
            "a new message before the last one was finished",
        ),
        (unmasked(0xC2, b"x"), "reserved bits set, and no extension was agreed"),
        (unmasked(0x83, b"x"), "unknown opcode 0x3"),
        (unmasked(0x8B, b"x"), "unknown opcode 0xb"),
        # RFC 6455, 5.2: the most significant bit of a 64-bit length must be 0 (was 1009).
        (struct.pack("!BBQ", 0x82, 127, 1 << 63), "a 64-bit length with its top bit set"),
        (struct.pack("!BBQ", 0x82, 127, 2**64 - 1), "a 64-bit length with its top bit set"),
    ],
)
def test_protocol_errors(wire, reason):
    with pytest.raises(FrameError) as refused:
        ClientFrames(MAX, masked=False).feed(wire)
    assert (refused.value.code, refused.value.reason) == (1002, reason)


def test_the_tornado_names_the_reader_uses_are_there():
    """The bulk reader leans on these insides of Tornado's WebSocketProtocol13
    (and of its IOStream); a Tornado release that renames one fails here, by name."""
    protocol = WebSocketProtocol13(None, False, _WebSocketParams())
    left, right = socket.socketpair()
    with left, right:
        protocol.stream = IOStream(left)
        missing = []
        for name in frames.TORNADO_NAMES:
            owner = protocol
            for part in name.split("."):
                if not hasattr(owner, part):
                    missing.append(name)
                    break
                owner = getattr(owner, part)
        protocol.stream.close()
    assert missing == []


def test_reads_of_any_size_into_one_reused_buffer_give_every_message_whole():
    # As the route reads: into one bytearray, overwritten by the next read,
    # split wherever the kernel split it (inside headers, masks, payloads).
    rng = random.Random(19)
    sizes = (0, 1, 3, 125, 126, 127, 2000, 32768, 65535, 65536, 70000)
    messages = [os.urandom(rng.choice(sizes)) for _ in range(80)]
    wire = b"".join(client_frame(Opcode.BINARY, m) for m in messages)
    parser, received, got, start = ClientFrames(MAX), bytearray(wsframes.READ_SIZE), [], 0
    while start < len(wire):
        size = min(rng.choice((1, 2, 5, 14, 1000, 40000, wsframes.READ_SIZE)), len(wire) - start)
        received[:size] = wire[start : start + size]
        got += parser.feed(memoryview(received)[:size])
        received[:] = bytes(len(received))  # the next read overwrites it
        start += size
    assert got == [(wsframes.BINARY, m) for m in messages]


def test_messages_sent_past_a_full_socket_buffer_arrive_whole_and_in_order():
    # send_binary writes straight to the socket while Tornado holds nothing,
    # and hands Tornado what the kernel did not take: the peer gets every
    # frame in order, and unsent() counts what waits until it is gone.
    async def send_and_read() -> tuple[list, int, int]:
        left, right = socket.socketpair()
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        right.setblocking(False)
        protocol = frames.BulkFrameProtocol(None, False, _WebSocketParams())
        protocol.stream = IOStream(left)
        messages = [os.urandom(n) for n in (1, 125, 126, 65535, 65536, 300_000, 2, 70_000)]
        written = [protocol.send_binary(m) for m in messages]
        waiting = protocol.unsent()
        wire = sum(len(m) + (2 if len(m) < 126 else 4 if len(m) < 65536 else 10) for m in messages)
        received = bytearray()
        loop = asyncio.get_running_loop()
        while len(received) < wire:
            received += await loop.sock_recv(right, 65536)
        for future in written:
            if future is not None:
                await future
        got = ClientFrames(MAX, masked=False).feed(received)
        unsent = protocol.unsent()
        protocol.stream.close()
        right.close()
        assert got == [(wsframes.BINARY, m) for m in messages]
        return written, waiting, unsent

    written, waiting, unsent = asyncio.run(send_and_read())
    assert written[0] is None  # the first went to the kernel whole: no Future made
    assert waiting > 0  # the rest did not fit: Tornado held it
    assert unsent == 0


def test_one_feed_parses_at_most_max_frames_and_keeps_the_rest_in_order():
    parser = ClientFrames(MAX, max_frames=3)
    wire = b"".join(client_frame(Opcode.BINARY, bytes([i])) for i in range(8))
    tail = client_frame(Opcode.BINARY, b"tail")
    wire += tail[:-2]
    assert parser.feed(wire) == [(wsframes.BINARY, bytes([i])) for i in range(3)]
    assert parser.backlog
    assert parser.feed(b"") == [(wsframes.BINARY, bytes([i])) for i in range(3, 6)]
    assert parser.feed(b"") == [(wsframes.BINARY, bytes([i])) for i in range(6, 8)]
    assert not parser.backlog  # what is left is the start of a frame
    assert parser.feed(tail[-2:]) == [(wsframes.BINARY, b"tail")]
    assert parser.frames == 9


def test_a_backlog_fed_more_bytes_keeps_their_order():
    rng = random.Random(7)
    messages = [os.urandom(rng.choice((0, 1, 5, 200))) for _ in range(500)]
    wire = b"".join(client_frame(Opcode.BINARY, m) for m in messages)
    parser, got, start = ClientFrames(MAX, max_frames=10), [], 0
    while start < len(wire) or parser.backlog:
        size = rng.choice((0, 1, 3, 50, 4000))
        got += parser.feed(wire[start : start + size])
        start += size
    assert got == [(wsframes.BINARY, m) for m in messages]


class RecordingHandler:
    """What BulkFrameProtocol calls on its handler, noting the event loop's
    turn (a ticker task counts them) in which each frame was handled."""

    def __init__(self) -> None:
        self.turn = 0
        self.handled: list[int] = []  # the turn of each message, in order
        self.closed = asyncio.Event()

    def relay(self, messages: list[bytes]) -> None:
        self.handled += [self.turn] * len(messages)

    def writable(self) -> None:
        return None

    def on_ping(self, data: bytes) -> None:
        self.handled.append(self.turn)

    def on_ws_connection_close(self, code, reason) -> None:
        self.closed.set()


@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.PING])
def test_a_read_full_of_tiny_frames_gives_others_a_turn(opcode):
    # 256 KiB of empty frames is 43,690 of them: handled in one go, the
    # Jupyter server answered nothing else meanwhile (a ping flood held its
    # event loop for 0.7 s per read; /api/status took 5 s). Tornado's own
    # reader gives others a turn every 256 frames; so does this one now.
    async def flood() -> list[int]:
        left, right = socket.socketpair()
        handler = RecordingHandler()
        protocol = frames.BulkFrameProtocol(handler, False, _WebSocketParams())
        protocol.stream = IOStream(left)
        wire = Frame(opcode, b"").serialize(mask=True, extensions=[]) * 43_690
        right.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, len(wire))
        right.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(right, wire)  # queued for left: one read can take a lot
        right.shutdown(socket.SHUT_WR)

        async def ticker() -> None:
            while True:
                handler.turn += 1
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        await asyncio.wait_for(protocol._receive_frame_loop(), 30)
        ticking.cancel()
        right.close()
        return handler.handled

    handled = asyncio.run(flood())
    assert len(handled) == 43_690
    per_turn = max(handled.count(turn) for turn in set(handled))
    assert per_turn <= 256  # wsframes.MAX_FRAMES_PER_FEED


def test_messages_before_a_bad_frame_come_with_the_error():
    # Tornado's reader, frame by frame, handed these over before it met the
    # bad frame; the bulk reader lost them (they were in the same read).
    wire = client_frame(Opcode.BINARY, b"last bytes") + client_frame(Opcode.PING, b"p")
    with pytest.raises(FrameError) as refused:
        ClientFrames(MAX).feed(wire + unmasked(0x82, b"x"))
    assert refused.value.code == 1002
    assert refused.value.messages == [(wsframes.BINARY, b"last bytes"), (wsframes.PING, b"p")]


def test_nothing_after_a_close_frame_is_parsed():
    # RFC 6455, 5.5.1: after a close frame, no more frames. What follows it
    # (even frames that would be refused) is ignored: the close is echoed.
    close = client_frame(Opcode.CLOSE, struct.pack("!H", 1000))
    after = client_frame(Opcode.BINARY, b"late") + unmasked(0x82, b"x") + bytes(20)
    for piece in (1, 3, 10_000):
        parser = ClientFrames(MAX, max_frames=2)
        got = feed_in_pieces(parser, client_frame(Opcode.BINARY, b"data") + close + after, piece)
        got += parser.feed(b"")
        assert got == [(wsframes.BINARY, b"data"), (wsframes.CLOSE, b"\x03\xe8")]
        assert parser.feed(after) == []


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        (b"\x03", 1002, "a close frame with a one-byte body"),
        *(
            (struct.pack("!H", code), 1002, f"close code {code} is not one a client may send")
            for code in (0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535)
        ),
        (struct.pack("!H", 1000) + b"\xff\xfe", 1007, "a close reason that is not UTF-8"),
    ],
)
def test_a_close_frame_a_client_may_not_send_is_refused(body, code, reason):
    # Tornado echoed any code (1005 and 1006 must never be on the wire) and
    # dropped the connection without a close frame on a reason not UTF-8.
    with pytest.raises(FrameError) as refused:
        ClientFrames(MAX).feed(client_frame(Opcode.CLOSE, body))
    assert (refused.value.code, refused.value.reason) == (code, reason)


@pytest.mark.parametrize(
    "body", [b"", struct.pack("!H", 1000), struct.pack("!H", 4999) + "é".encode()]
)
def test_a_close_frame_a_client_may_send_is_handed_over(body):
    assert ClientFrames(MAX).feed(client_frame(Opcode.CLOSE, body)) == [(wsframes.CLOSE, body)]


def test_a_text_message_that_is_not_utf8_is_refused_with_1007():
    parser = ClientFrames(MAX)
    wire = client_frame(Opcode.TEXT, b"ok \xc3", fin=False) + client_frame(Opcode.CONT, b"\xa9")
    assert parser.feed(wire) == [(wsframes.TEXT, "ok é".encode())]  # split inside a character
    with pytest.raises(FrameError) as refused:
        parser.feed(client_frame(Opcode.TEXT, b"\xc3("))
    assert (refused.value.code, refused.value.reason) == (1007, "a text message that is not UTF-8")


@pytest.mark.parametrize("fragment", [0, 1])
def test_the_fragments_of_a_message_cost_their_payload_only(fragment):
    # The fragments were kept as a list of bytes objects: 8 bytes per empty
    # continuation frame, never counted against the message limit (64 MiB of
    # them grew the Jupyter server by 86 MiB, without end), and ~56 bytes per
    # 1-byte one (2 MiB of payload: 113 MiB). Tornado's reader extends one
    # bytearray.
    parser = ClientFrames(MAX, masked=False)
    parser.feed(unmasked(0x02, b""))
    continuation = unmasked(0x00, bytes(fragment)) * 20_000
    tracemalloc.start()
    try:
        parser.feed(continuation)
        while parser.backlog:
            parser.feed(b"")
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held <= 2 * fragment * 20_000 + 64 * 1024
    assert parser.feed(unmasked(0x80, b"!")) == [(wsframes.BINARY, bytes(fragment) * 20_000 + b"!")]
