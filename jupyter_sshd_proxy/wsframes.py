"""WebSocket frames (RFC 6455, section 5) with no I/O: a client's, parsed in
bulk, and the headers of a server's.

Both places that serve the /sshd/ WebSocket use them: the Jupyter server's
route (frames.py, inside Tornado) and the relay process that the supervisor
starts for each connection handed to it (relay.py). Neither this module nor
relay.py imports Tornado.
"""

from __future__ import annotations

import struct

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
READ_SIZE = 256 * 1024  # bytes read from the client at a time, at most
DIRECT_READ_AFTER = 32 * 1024  # a read at least this large: try the socket at once
YIELD_AFTER = READ_SIZE  # bytes read without waiting before others get a turn (as Tornado)
FRAME_COST = 1024  # a frame counts as this many bytes toward YIELD_AFTER (as Tornado)
MAX_FRAMES_PER_FEED = YIELD_AFTER // FRAME_COST  # frames parsed and handled in one turn, at most


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


def server_header(opcode: int, length: int) -> bytes:
    """The header of a final frame from the server: never masked (RFC 6455, 5.1)."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length <= 0xFFFF:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)
