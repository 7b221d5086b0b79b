"""The route's WebSocket frames from the client, read in bulk (RFC 6455, section 5).

Tornado reads a frame with four awaits (header, length, mask, payload) and
hands each message to on_message through a task of its own: per 64 KiB that
an ssh upload sends, that was most of the CPU the Jupyter server spent on the
byte path, in the event loop that also serves the user's notebooks. Here the
bytes the client sent are taken from Tornado's stream as they come (up to
READ_SIZE at a time), every complete frame in them is parsed at once, and
the payloads are unmasked by websockets' C routine.

ClientFrames (wsframes.py) is the parser, with no I/O (its tests feed it bytes).
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
from asyncio import Future
from typing import Any, Callable

from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketProtocol13

from .wsframes import (
    BINARY,
    DIRECT_READ_AFTER,
    FRAME_COST,
    READ_SIZE,
    YIELD_AFTER,
    ClientFrames,
    FrameError,
    server_header,
)

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
    "stream._read_buffer",
    "stream._read_buffer_size",
    "stream._state",
    "stream.socket",
    "stream.io_loop",
    "_ping_coroutine",
    "server_terminated",
    "params",
    "handler",
)


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
    handed_off = False  # the connection is a relay's now (relay.py)

    def can_hand_off(self) -> bool:
        """Whether the client's socket can go to another process: a plain
        one (TLS state cannot), no compression, nothing of ours unsent."""
        return (
            self._direct_socket() is not None
            and self._compressor is None
            and self._decompressor is None
            and not self.stream._write_buffer
            and not self.is_closing()
        )

    def hand_off(self) -> tuple[socket.socket, bytes]:
        """Take the client's socket away from Tornado: (it, the bytes of the
        client's that Tornado has read and not handled). Tornado never reads,
        writes or pings on it again, and closing the stream closes nothing."""
        stream = self.stream
        buffered = bytes(stream._read_buffer[: stream._read_buffer_size])
        stream._read_buffer_size = 0
        if stream._state is not None:
            stream.io_loop.remove_handler(stream.socket)
            stream._state = None
        client = socket.socket(fileno=stream.socket.detach())
        if self._ping_coroutine:
            self._ping_coroutine.cancel()
            self._ping_coroutine = None
        self.handed_off = True
        return client, buffered

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self.handed_off:
            self.handler.end_relay()  # the relay closes the WebSocket
            return
        super().close(code, reason)

    def _direct_socket(self) -> socket.socket | None:
        """The client's socket, if bytes may go to and from it directly: not TLS."""
        stream = self.stream
        return stream.socket if type(stream) is IOStream else None

    async def _receive_frame_loop(self) -> None:
        if self.handed_off:
            try:
                await self.handler.relayed()
            finally:
                self.client_terminated = self.server_terminated = True
                self.stream.close()
                self.handler.on_ws_connection_close(self.close_code, self.close_reason)
            return
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
        length = len(data)
        header = server_header(BINARY, length)
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
