"""An ssh ProxyCommand that speaks valid WebSocket with every freedom RFC 6455
leaves a client, to check that the route keeps every byte in order.

    python chaos_proxy.py PORT SEED MODE    (the token in $CHAOS_TOKEN)

It frames ssh's bytes at random boundaries: fragmented messages (continuation
frames, pings and pongs between them), empty messages, non-minimal length
encodings, fresh masks; and writes them split at random offsets (1 byte to
300 KiB, Nagle off, short pauses), so frame headers and mask keys are cut
across the server's reads at every offset. MODE "tiny" frames ssh's bytes 1
to 5 at a time; "pipelined" sends the first frames (and up to 700 pings)
with the upgrade request, before the 101. Server frames: binary to stdout,
pings answered, close ends it.
"""

from __future__ import annotations

import base64
import os
import random
import socket
import struct
import sys
import threading
import time

from websockets.speedups import apply_mask


class Chaos:
    def __init__(self, port: int, token: str, seed: int, mode: str) -> None:
        self.rng = random.Random(seed)
        self.mode = mode
        self.lock = threading.Lock()
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        early = b""
        if mode == "pipelined":
            first = os.read(0, 65536)
            count = self.rng.randint(0, 700)
            pings = b"".join(self.frame(9, os.urandom(125)) for _ in range(count))
            early = pings + self.frame(2, first)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /sshd/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: token {token}\r\n\r\n"
            ).encode()
            + early
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                sys.exit("the server closed the upgrade")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            sys.exit(head.decode(errors="replace"))

    def frame(self, opcode: int, payload: bytes, fin: bool = True) -> bytes:
        length = len(payload)
        first = (0x80 if fin else 0) | opcode
        forms = ([7] if length < 126 else []) + ([16] if length < 65536 else []) + [64]
        form = self.rng.choice(forms) if self.rng.random() < 0.2 else forms[0]
        if form == 7:
            header = struct.pack("!BB", first, 0x80 | length)
        elif form == 16:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        mask = os.urandom(4)
        return header + mask + apply_mask(payload, mask)

    def control(self) -> bytes:
        return self.frame(self.rng.choice((9, 10)), os.urandom(self.rng.choice((0, 1, 125))))

    def put(self, wire: bytes) -> None:
        rng = self.rng
        with self.lock:
            start = 0
            while start < len(wire):
                r = rng.random()
                step = (
                    1 if r < 0.05
                    else rng.randint(2, 20) if r < 0.15
                    else rng.randint(21, 70_000) if r < 0.9
                    else rng.randint(70_000, 300_000)
                )  # fmt: skip
                self.sock.sendall(wire[start : start + step])
                start += step
                if rng.random() < 0.02:
                    time.sleep(rng.random() * 0.002)

    def message(self, piece: bytes) -> bytes:
        rng = self.rng
        if rng.random() >= 0.3 or len(piece) < 3:
            return self.frame(2, piece)
        cuts = sorted(rng.sample(range(1, len(piece)), min(len(piece) - 1, rng.randint(1, 4))))
        parts = [piece[a:b] for a, b in zip([0, *cuts], [*cuts, len(piece)])]
        wire = b""
        for index, part in enumerate(parts):
            wire += self.frame(0 if index else 2, part, fin=index == len(parts) - 1)
            if rng.random() < 0.3:
                wire += self.control()
        return wire

    def up(self) -> None:
        rng = self.rng
        sizes = (1, 2, 3, 5) if self.mode == "tiny" else (1, 5, 125, 126, 1000, 65536, 200_000)
        while data := os.read(0, rng.choice((1, 100, 4096, 65536, 262_144, 1 << 20))):
            wire = bytearray()
            start = 0
            while start < len(data):
                size = rng.choice(sizes)
                wire += self.message(data[start : start + size])
                start += size
                if rng.random() < 0.05:
                    wire += self.control()
                if rng.random() < 0.02:
                    wire += self.frame(2, b"")
            self.put(bytes(wire))
        self.put(self.frame(8, struct.pack("!H", 1000)))

    def _need(self, size: int) -> bool:
        while len(self.buffer) < size:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def down(self) -> None:
        out = os.fdopen(1, "wb", buffering=0)
        while self._need(2):
            opcode, length, head = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length == 126:
                if not self._need(4):
                    break
                length, head = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif length == 127:
                if not self._need(10):
                    break
                length, head = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if not self._need(head + length):
                break
            payload = self.buffer[head : head + length]
            self.buffer = self.buffer[head + length :]
            if opcode == 2:
                out.write(payload)
            elif opcode == 9:
                self.put(self.frame(10, payload))
            elif opcode == 8:
                break
        os._exit(0)


def main() -> None:
    port, seed, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    chaos = Chaos(port, os.environ["CHAOS_TOKEN"], seed, mode)
    threading.Thread(target=chaos.down, daemon=True).start()
    chaos.up()
    threading.Event().wait()  # until down() sees the close


if __name__ == "__main__":
    main()
