"""Hold every packet of an NFQUEUE for a fixed time, then let it through.

    python benchmarks/netdelay.py MILLISECONDS [--queue N]

A stand-in for `tc qdisc add ... netem delay`, for kernels built without
sch_netem: iptables sends the packets to delay to the queue (`-j NFQUEUE
--queue-num N --queue-bypass`), and this process, bound to the queue in its
own network namespace, gives each one the ACCEPT verdict MILLISECONDS after
the kernel queued it. The packets stay in the kernel (only their metadata is
read), and one verdict releases every packet up to the newest one due: with a
constant delay they are due in the order they came. Large (GSO) packets are
queued whole.

Prints "ready" once bound, runs until SIGTERM or SIGINT, then lets everything
through and prints one JSON line: packets, verdicts, how late the releases
were. Standard library only; Linux; needs CAP_NET_ADMIN (root).
"""

from __future__ import annotations

import argparse
import collections
import json
import selectors
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
SO_RCVBUFFORCE = 33
NFNL_SUBSYS_QUEUE = 3
MSG_PACKET, MSG_CONFIG, MSG_VERDICT_BATCH = 0, 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
# attributes of a config message
CFG_CMD, CFG_PARAMS, CFG_QUEUE_MAXLEN, CFG_MASK, CFG_FLAGS = 1, 2, 3, 4, 5
CMD_BIND = 1
COPY_META = 1
FLAG_GSO = 1 << 2
# attributes of a packet and of a verdict
ATTR_PACKET_HDR, ATTR_VERDICT_HDR = 1, 2
NF_ACCEPT = 1

NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
NFGENMSG = struct.Struct("=BBH")  # family, version, queue number (big-endian)
NLATTR = struct.Struct("=HH")  # length, type


def attribute(kind: int, payload: bytes) -> bytes:
    size = NLATTR.size + len(payload)
    return NLATTR.pack(size, kind) + payload + bytes(-size % 4)


class Queue:
    """One NFQUEUE, bound in the network namespace this process runs in."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.sequence = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))
        bind = struct.pack("!BxH", CMD_BIND, socket.AF_INET)
        self.configure(attribute(CFG_CMD, bind))
        self.configure(
            attribute(CFG_PARAMS, struct.pack("!IB", 0, COPY_META)),
            attribute(CFG_QUEUE_MAXLEN, struct.pack("!I", 1 << 18)),
            attribute(CFG_FLAGS, struct.pack("!I", FLAG_GSO)),
            attribute(CFG_MASK, struct.pack("!I", FLAG_GSO)),
        )
        self.sock.setblocking(False)

    def message(self, kind: int, attributes: tuple[bytes, ...], flags: int) -> bytes:
        self.sequence += 1
        body = NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(self.number)) + b"".join(attributes)
        header = NLMSG.pack(
            NLMSG.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, self.sequence, 0
        )
        return header + body

    def configure(self, *attributes: bytes) -> None:
        self.sock.send(self.message(MSG_CONFIG, attributes, NLM_F_REQUEST | NLM_F_ACK))
        answer = self.sock.recv(4096)
        _, kind, _, _, _ = NLMSG.unpack_from(answer)
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", answer, NLMSG.size)
            if code:
                raise OSError(-code, f"NFQUEUE {self.number}: configuration refused")

    def packet_ids(self) -> list[int]:
        """The ids of the packets queued since the last call (never blocks)."""
        ids = []
        packet = (NFNL_SUBSYS_QUEUE << 8) | MSG_PACKET
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return ids
            offset = 0
            while offset + NLMSG.size <= len(data):
                size, kind, _, _, _ = NLMSG.unpack_from(data, offset)
                if size < NLMSG.size:
                    break
                if kind == packet:
                    position = offset + NLMSG.size + NFGENMSG.size
                    while position + NLATTR.size <= offset + size:
                        length, attr = NLATTR.unpack_from(data, position)
                        if length < NLATTR.size:
                            break
                        if attr & 0x7FFF == ATTR_PACKET_HDR:
                            ids.append(struct.unpack_from("!I", data, position + NLATTR.size)[0])
                            break
                        position += (length + 3) & ~3
                offset += (size + 3) & ~3

    def accept_up_to(self, packet_id: int) -> None:
        verdict = attribute(ATTR_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
        self.sock.send(self.message(MSG_VERDICT_BATCH, (verdict,), NLM_F_REQUEST))


def run(delay_ms: float, number: int) -> dict:
    delay = delay_ms / 1000
    queue = Queue(number)
    held: collections.deque[tuple[float, int]] = collections.deque()
    stats = {"delay_ms": delay_ms, "packets": 0, "verdicts": 0, "most_held": 0}
    late_total = late_max = 0.0
    stop = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.append(True))
    selector = selectors.DefaultSelector()
    selector.register(queue.sock, selectors.EVENT_READ)
    print("ready", flush=True)  # noqa: T201
    while not stop:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 1.0
        if selector.select(timeout):
            now = time.monotonic()
            for packet_id in queue.packet_ids():
                held.append((now + delay, packet_id))
                stats["packets"] += 1
            stats["most_held"] = max(stats["most_held"], len(held))
        now = time.monotonic()
        last = None
        while held and held[0][0] <= now:
            due, last = held.popleft()
            late_total += now - due
            late_max = max(late_max, now - due)
        if last is not None:
            queue.accept_up_to(last)
            stats["verdicts"] += 1
    if held:
        queue.accept_up_to(held[-1][1])
    stats["late_ms_mean"] = round(late_total / max(stats["packets"], 1) * 1000, 3)
    stats["late_ms_max"] = round(late_max * 1000, 3)
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("milliseconds", type=float, help="how long each packet is held")
    parser.add_argument("--queue", type=int, default=0, help="NFQUEUE number (default 0)")
    args = parser.parse_args()
    print(json.dumps(run(args.milliseconds, args.queue)), flush=True)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
