"""The route's WebSocket frames from the client, read in bulk (RFC 6455, section 5).

Tornado reads a frame with four awaits (header, length, mask, payload) and
hands each message to on_message through a task of its own: per 64 KiB that
an ssh upload sends, that was most of the CPU the Jupyter server spent on the
byte path, in the event loop that also serves the user's notebooks. Here the
bytes the client sent are taken from Tornado's stream as they come (up to
READ_SIZE at a time), every complete frame in them is parsed at once, and
the payloads are unmasked by websockets' C routine.

ClientFrames is the parser, with no I/O (its tests feed it bytes).
BulkFrameProtocol is Tornado's WebSocketProtocol13 with that reader in place
of its own; everything else (the upgrade, pings and pongs, the close
handshake, writing) stays Tornado's, and so do its limits: a message larger
than websocket_max_message_size closes the connection with 1009, a protocol
error with 1002 (text or a close reason that is not UTF-8: 1007), after the
messages that came before it; nothing after a close frame is read. The
names of Tornado's protocol it uses are in TORNADO_NAMES
(tests/unit/test_frames.py checks them against the installed Tornado). With
permessage-deflate (never asked by ssh clients: the bytes are encrypted)
Tornado's own reader is used.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from asyncio import Future
from typing import Any, Callable

from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketProtocol13

try:
    from websockets.speedups import apply_mask
except ImportError:  # a build of websockets without its C extension
    from websockets.utils import apply_mask

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = (TEXT, BINARY)
CONTROL_OPCODES = (CLOSE, PING, PONG)
PROTOCOL_ERROR, INVALID_DATA, MESSAGE_TOO_BIG = 1002, 1007, 1009  # close codes
# The close codes a client may send (RFC 6455, 7.4; 1012-1014 are IANA's, as websockets has them).
CLIENT_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)))
MAX_CONTROL_PAYLOAD = 125
READ_SIZE = 256 * 1024  # bytes taken from Tornado's stream at a time, at most
DIRECT_READ_AFTER = 32 * 1024  # a read at least this large: try the socket at once
YIELD_AFTER = READ_SIZE  # bytes read without waiting before others get a turn (as Tornado)
FRAME_COST = 1024  # a frame counts as this many bytes toward YIELD_AFTER (as Tornado)
MAX_FRAMES_PER_FEED = YIELD_AFTER // FRAME_COST  # frames parsed and handled in one turn, at most
# What the reader uses of Tornado's WebSocketProtocol13 beyond its documented API.
TORNADO_NAMES = (
    "_receive_frame_loop",
    "_handle_message",
    "_abort",
    "_write_frame",
    "_decompressor",
    "_compressor",
    "_wire_bytes_in",
    "_message_bytes_in",
    "_message_bytes_out",
    "client_terminated",
    "stream",
    "stream._write_buffer",
    "stream._read_buffer_size",
    "stream.socket",
    "params",
    "handler",
)


class FrameError(Exception):
    """The client broke the protocol: the connection ends with code (and reason).

    messages: those that came whole before the frame that broke it, in
    order (Tornado's reader, frame by frame, had handled them already)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason
        self.messages: list[tuple[int, bytes]] = []


class ClientFrames:
    """The messages in the bytes a client sends, parsed in bulk; no I/O.

    feed() takes whatever came and returns the complete messages in it, in
    order, as (opcode, payload): data messages whole (their fragments joined,
    as Tornado hands them over), control frames as they come, also between
    the fragments of a message. It keeps at most one incomplete frame (and
    the fragments of one message), so at most max_message_size and a read.
    A message larger than max_message_size is refused as soon as its header
    says so, before its payload is read.

    One feed() parses at most max_frames frames: a read full of tiny frames
    (43,690 empty pings fit in 256 KiB) would otherwise be handled in one
    go, in the event loop that serves everything else. The frames past that
    are kept (backlog is then true) for the next feed(b""); frames counts
    every frame parsed, so the reader can give others a turn by frames as
    well as by bytes."""

    def __init__(
        self, max_message_size: int, masked: bool = True, max_frames: int = MAX_FRAMES_PER_FEED
    ) -> None:
        self.max_message_size = max_message_size
        self.masked = masked  # a client must mask every frame (RFC 6455, 5.1)
        self.max_frames = max_frames
        self.backlog = False  # complete frames kept for the next feed: max_frames was reached
        self.frames = 0  # frames parsed so far
        self.closed = False  # a close frame came: what follows it is not parsed
        self._budget = max_frames  # frames this feed may still parse
        self._buffer = bytearray()
        self._need = 2  # bytes the buffer must hold before parsing is worth it
        # The payload so far of a data message not yet final: one bytearray, so a
        # fragment costs its payload only (empty ones nothing), as in Tornado.
        self._fragments: bytearray | None = None
        self._opcode = 0  # the opcode of that message

    def feed(self, data: bytes | memoryview) -> list[tuple[int, bytes]]:
        """The messages completed by data. Raises FrameError, which holds the
        messages that came before the frame that broke the protocol. After
        a close frame nothing more is parsed (RFC 6455, 5.5.1)."""
        messages: list[tuple[int, bytes]] = []
        try:
            self._feed(data, messages)
        except FrameError as error:
            error.messages = messages
            raise
        return messages

    def _feed(self, data: bytes | memoryview, messages: list[tuple[int, bytes]]) -> None:
        buffer = self._buffer
        if self.closed:
            return
        backlog, self.backlog, self._budget = self.backlog, False, self.max_frames
        with memoryview(data) as view:
            if backlog:  # frames left by the last feed: they come before data
                buffer += view
                with memoryview(buffer) as kept:
                    position = self._parse(kept, messages)
                del buffer[:position]
                return
            start = 0
            while buffer:  # a frame begun in an earlier read: complete it first
                take = self._need - len(buffer)
                if take > len(view) - start:
                    buffer += view[start:]
                    return
                buffer += view[start : start + take]
                start += take
                with memoryview(buffer) as kept:
                    position = self._parse(kept, messages)
                del buffer[:position]
            # The rest is parsed where it lies; only what is left of it is kept.
            with view[start:] as rest:
                position = self._parse(rest, messages)
                if position < len(rest):
                    buffer += rest[position:]

    def _parse(self, view: memoryview, messages: list[tuple[int, bytes]]) -> int:
        """Add the messages in the complete frames at the start of view to
        messages; where they end (all of view after a close frame: discarded)."""
        size, position = len(view), 0
        while True:
            if self.closed:
                return size
            if size - position < 2:
                self._need = 2
                break
            if not self._budget:
                self.backlog = True
                break
            first, second = view[position], view[position + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                head = 4
            elif length == 127:
                head = 10
            masked = second & 0x80
            if masked:
                head += 4
            if size - position < head:
                self._need = head
                break
            if length == 126:
                length = int.from_bytes(view[position + 2 : position + 4], "big")
            elif length == 127:
                length = int.from_bytes(view[position + 2 : position + 10], "big")
            self._check(first, masked, length)
            end = position + head + length
            if size < end:
                self._need = end - position
                break
            if masked:
                mask = bytes(view[position + head - 4 : position + head])
                payload = apply_mask(view[position + head : end], mask)
            else:
                payload = bytes(view[position + head : end])
            position = end
            self._budget -= 1
            self.frames += 1
            message = self._frame(first, payload)
            if message is not None:
                messages.append(message)
        return position

    def _check(self, first: int, masked: int, length: int) -> None:
        """Refuse a frame by its header, before its payload is read."""
        opcode = first & 0x0F
        if length >> 63:
            raise FrameError(PROTOCOL_ERROR, "a 64-bit length with its top bit set")
        if first & 0x70:
            msg = "reserved bits set, and no extension was agreed"
            raise FrameError(PROTOCOL_ERROR, msg)
        if self.masked and not masked:
            raise FrameError(PROTOCOL_ERROR, "a frame from the client that is not masked")
        if opcode in CONTROL_OPCODES:
            if not first & 0x80:
                raise FrameError(PROTOCOL_ERROR, "a fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise FrameError(PROTOCOL_ERROR, "a control frame of more than 125 bytes")
        elif opcode in DATA_OPCODES or opcode == CONTINUATION:
            if (opcode == CONTINUATION) != (self._fragments is not None):
                msg = (
                    "a continuation frame with no message to continue"
                    if opcode == CONTINUATION
                    else "a new message before the last one was finished"
                )
                raise FrameError(PROTOCOL_ERROR, msg)
            if len(self._fragments or b"") + length > self.max_message_size:
                raise FrameError(MESSAGE_TOO_BIG, "message too big")
        else:
            raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")

    def _frame(self, first: int, payload: bytes) -> tuple[int, bytes] | None:
        opcode, final = first & 0x0F, first & 0x80
        if opcode == CLOSE:
            self.closed = True
            _check_close(payload)
        if opcode in CONTROL_OPCODES:
            return opcode, payload
        if opcode != CONTINUATION:
            if final:
                return _checked(opcode, payload)
            self._opcode, self._fragments = opcode, bytearray(payload)
            return None
        assert self._fragments is not None  # _check refused a continuation of nothing
        self._fragments += payload
        if not final:
            return None
        message = (self._opcode, bytes(self._fragments))
        self._fragments = None
        return _checked(*message)


def _check_close(payload: bytes) -> None:
    """Refuse a close frame whose body is not a code a client may send and a
    UTF-8 reason (RFC 6455, 5.5.1 and 7.4). Tornado's own reader echoed any
    code (1005 and 1006 among them, which must never be sent) and dropped
    the connection without a word on a reason that was not UTF-8."""
    if not payload:
        return
    if len(payload) == 1:
        raise FrameError(PROTOCOL_ERROR, "a close frame with a one-byte body")
    code = int.from_bytes(payload[:2], "big")
    if code not in CLIENT_CLOSE_CODES:
        raise FrameError(PROTOCOL_ERROR, f"close code {code} is not one a client may send")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(INVALID_DATA, "a close reason that is not UTF-8") from None


def _checked(opcode: int, payload: bytes) -> tuple[int, bytes]:
    """A whole data message; a text one must be UTF-8 (RFC 6455, 8.1)."""
    if opcode == TEXT:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(INVALID_DATA, "a text message that is not UTF-8") from None
    return opcode, payload


class BulkFrameProtocol(WebSocketProtocol13):
    """Tornado's protocol with the bulk reader, for a handler that relays bytes.

    The handler's relay(messages) takes the binary messages of each read
    (as a list, synchronously, no task per message), and writable() is an awaitable
    while the far side is full, or None: the next bytes are read from the
    client only then, so TCP pushes back on the client as before. Text and
    control messages go where Tornado sends them (on_message; pongs, the close
    handshake).

    On a plain (not TLS) connection, reads and writes skip Tornado's stream
    machinery whenever it holds nothing: after a large read the next bytes
    are taken from the socket straight away while Tornado has none buffered
    (its read, which waits, when the socket has nothing), and send_binary writes header and
    payload with one sendmsg while Tornado has nothing waiting to be written,
    handing Tornado only what the kernel did not take. Either way the bytes
    keep their order, and Tornado's buffer, which unsent() counts, holds all
    that is waiting."""

    handler: Any

    def _direct_socket(self) -> socket.socket | None:
        """The client's socket, if bytes may go to and from it directly: not TLS."""
        stream = self.stream
        return stream.socket if type(stream) is IOStream else None

    async def _receive_frame_loop(self) -> None:
        if self._decompressor is not None:
            await super()._receive_frame_loop()
            return
        parser = ClientFrames(self.params.max_message_size)
        relay: Callable[[list[bytes]], None] = self.handler.relay
        writable: Callable[[], Any] = self.handler.writable
        stream = self.stream
        direct = self._direct_socket()
        # Reads go straight into this (recv_into): no buffer made per read.
        received = bytearray(READ_SIZE)
        view = memoryview(received)
        work = 0  # bytes read (and frames, at FRAME_COST) since others last had a turn
        size = 0
        try:
            while not self.client_terminated:
                frames_before = parser.frames
                if parser.backlog:
                    # Frames of the last read are still to be handled: no read now.
                    chunk = view[:0]
                else:
                    # After a large read more is likely there: take it from the socket
                    # while Tornado holds none of the client's bytes (so the next are
                    # the socket's). After a small one (sshd's window adjustments
                    # during a download) Tornado's read, which waits, comes first.
                    bulk, size = size >= DIRECT_READ_AFTER, 0
                    if bulk and direct is not None and not stream._read_buffer_size:
                        try:
                            size = direct.recv_into(received)
                        except OSError:
                            size = 0  # none yet, or an error: Tornado's read meets it
                    if not size:
                        size = await stream.read_into(received, partial=True)
                    self._wire_bytes_in += size
                    work += size
                    chunk = view[:size]
                failure: FrameError | None = None
                try:
                    messages = parser.feed(chunk)
                except FrameError as error:
                    # What came before the bad frame is handled first, as
                    # Tornado's reader, frame by frame, did.
                    messages, failure = error.messages, error
                work += FRAME_COST * (parser.frames - frames_before)
                data: list[bytes] = []  # binary messages not yet relayed
                for opcode, payload in messages:
                    if self.client_terminated:
                        break
                    if opcode == BINARY:
                        data.append(payload)
                        continue
                    if data:
                        self._message_bytes_in += sum(map(len, data))
                        relay(data)
                        data = []
                    handled = self._handle_message(opcode, payload)
                    if handled is not None:
                        await handled
                if data and not self.client_terminated:
                    self._message_bytes_in += sum(map(len, data))
                    relay(data)
                if failure is not None:
                    self.close(failure.code, failure.reason)
                    self._abort()
                    return
                wait = writable()
                if wait is not None:
                    await wait
                    work = 0
                elif work >= YIELD_AFTER:
                    # The socket may have more without ever waiting: others'
                    # turn now and then, as Tornado's own reader gives it.
                    work = 0
                    await asyncio.sleep(0)
        except StreamClosedError:
            self._abort()
        finally:
            self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    def send_binary(self, data: bytes) -> Future[None] | None:
        """Write data as one binary message. None if the kernel took all of it,
        else the Future of the write (no task per message, as write_message
        makes). Raises StreamClosedError."""
        if self._compressor is not None:
            written = self.write_message(data, binary=True)
            written.add_done_callback(lambda f: f.cancelled() or f.exception())
            return written
        self._message_bytes_out += len(data)
        stream = self.stream
        direct = self._direct_socket()
        if direct is None or stream._write_buffer or stream.closed():
            return self._write_frame(True, BINARY, data)
        length = len(data)  # the server's frames are never masked (RFC 6455, 5.1)
        if length < 126:
            header = bytes((0x80 | BINARY, length))
        elif length <= 0xFFFF:
            header = struct.pack("!BBH", 0x80 | BINARY, 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | BINARY, 127, length)
        try:
            sent = direct.sendmsg((header, data))
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # The connection failed: Tornado's write meets it and closes the stream.
            return self._write_frame(True, BINARY, data)
        self._wire_bytes_out += len(header) + length
        if sent == len(header) + length:
            return None
        if sent < len(header):
            return stream.write(header[sent:] + data)
        return stream.write(memoryview(data)[sent - len(header) :])

    def unsent(self) -> int:
        """Bytes written and not yet in the kernel's socket buffer."""
        buffered = self.stream._write_buffer  # None once the stream is closed
        return 0 if buffered is None else len(buffered)
