"""Attacks on the relay processes: one per /sshd/ WebSocket, forked by the
supervisor, that speaks the server's side of RFC 6455 and moves the bytes
between the client's TCP socket and sshd (relay.py).

Each relay holds its own connection's sockets only; it keeps a bounded
amount of memory whatever the client does (sleeps with many channels
sending, floods pings and reads nothing); it ends with the supervisor
(PR_SET_PDEATHSIG), and soon after its client vanished, even while sshd
reads nothing. The figures are printed with pytest -s.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from jupyter_sshd_proxy import procfs, relay

from ..support.faults import (
    MiB,
    PeakMemory,
    RawWebSocket,
    ZeroSource,
    connection_tree,
    connections,
    figure,
    new_connection,
    proxy_command_of,
    server_answers,
)
from ..support.helpers import connectable, free_port, terminate, wait_for
from ..support.servers import remember_processes, start_sshd

SYS_PIDFD_GETFD = 438  # the same number on every architecture


# What /proc says about a relay's descriptors and TCP connections.


def descriptors(pid: int) -> dict[int, str]:
    """fd -> what it points to ("socket:[INODE]", "pipe:[INODE]", a path)."""
    found = {}
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for name in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                found[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
    return found


def socket_inodes(pid: int) -> dict[int, int]:
    """fd -> socket inode, for each socket process pid holds."""
    return {
        fd: int(target[len("socket:[") : -1])
        for fd, target in descriptors(pid).items()
        if target.startswith("socket:[")
    }


def tcp_connections() -> dict[int, tuple[int, int]]:
    """socket inode -> (local port, remote port) of every established TCP connection."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] != "01":  # TCP_ESTABLISHED
                    continue
                local = int(fields[1].rsplit(":", 1)[1], 16)
                remote = int(fields[2].rsplit(":", 1)[1], 16)
                found[int(fields[9])] = (local, remote)
    return found


def relays(server) -> list[int]:
    """The supervisor's relay processes: its children that are forks of it (not sshd)."""
    supervisor = server.status()["pid"]
    if supervisor is None:
        return []
    return [
        pid
        for pid in procfs.children(supervisor)
        if "jupyter_sshd_proxy.supervisor" in procfs.cmdline(pid) and procfs.alive(pid)
    ]


def relay_of_port(server, client_port: int) -> int | None:
    """The relay that holds the server's end of the TCP connection from client_port."""
    tcp = tcp_connections()
    for pid in relays(server):
        if any(tcp.get(ino) == (server.port, client_port) for ino in socket_inodes(pid).values()):
            return pid
    return None


def client_ports(ssh_process: subprocess.Popen, server_port: int) -> set[int]:
    """The local ports of the ProxyCommand's TCP connections to the server."""
    tcp = tcp_connections()
    return {
        tcp[ino][0]
        for pid in procfs.descendants(ssh_process.pid)
        for ino in socket_inodes(pid).values()
        if ino in tcp and tcp[ino][1] == server_port
    }


def relay_of_session(server, ssh_process: subprocess.Popen) -> int:
    def found() -> int | None:
        ports = client_ports(ssh_process, server.port)
        return next((r for p in ports if (r := relay_of_port(server, p))), None)

    return wait_for(found, 10, "the session's relay")


def relay_of_websocket(server, ws: RawWebSocket) -> int:
    port = ws.sock.getsockname()[1]
    return wait_for(lambda: relay_of_port(server, port), 10, "the WebSocket's relay")


def private_dirty(pid: int) -> int:
    """Private_Dirty of smaps_rollup, in bytes: the pages the relay wrote that
    no other process shares (its own heap, and what it un-shared of the
    supervisor's by writing to it)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as stream:
        for line in stream:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1]) * 1024
    return 0


def socket_copy(pid: int, fd: int) -> socket.socket:
    """A copy of descriptor fd of process pid (pidfd_getfd(2), Linux 5.6)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            code = ctypes.get_errno()
            if code in (errno.ENOSYS, errno.EPERM):
                pytest.skip(f"pidfd_getfd: {os.strerror(code)}")
            raise OSError(code, f"pidfd_getfd({pid}, {fd}): {os.strerror(code)}")
    finally:
        os.close(pidfd)
    return socket.socket(fileno=copy)


def what_socket(pid: int, fd: int) -> tuple:
    """A relay's socket, described by its ends: ("tcp", local port, remote
    port), or ("unix", its own name, its peer's name)."""
    with socket_copy(pid, fd) as sock:
        if sock.family == socket.AF_UNIX:
            return ("unix", sock.getsockname(), sock.getpeername())
        return ("tcp", sock.getsockname()[1], sock.getpeername()[1])


@contextlib.contextmanager
def stopped(pids: list[int]) -> Iterator[list[int]]:
    """SIGSTOP the processes (and what they start before they stop); SIGCONT them after."""
    held: list[int] = []
    try:
        for _ in range(2):  # a stopped process starts nothing more: twice is enough
            for pid in [p for root in pids for p in connection_tree(root)]:
                if pid not in held:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                        held.append(pid)
        yield held
    finally:
        for pid in held:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def close_frame(ws: RawWebSocket, within: float) -> bytes:
    """The payload of the server's close frame; fails if the server hangs up
    without one, or says nothing for `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        ws.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            frame = ws.receive()
        except (socket.timeout, TimeoutError):
            raise AssertionError(f"no close frame within {within}s") from None
        except ConnectionResetError:
            frame = None
        assert frame is not None, "the server hung up without a close frame"
        if frame[0] == 8:
            return frame[1]


def ping_frames(count: int) -> bytes:
    """count masked pings of 125 bytes (the most a control frame may carry)."""
    payload = os.urandom(125)
    return (struct.pack("!BB", 0x89, 0x80 | 125) + b"\0\0\0\0" + payload) * count


# What each relay holds.


def test_each_relay_holds_its_own_three_sockets_only(server, ours):
    """Two sessions at once: each relay holds the client's TCP socket, its
    connection to the supervisor's socket (sshd) and its control socket to
    the route (on the relay socket), and besides fds 0-2 only its own
    wake-up pipe: none of the other relay's, the supervisor's (its
    listening sockets among them) or the Jupyter server's descriptors."""
    sessions = [ours.open_session("cat", stdin=subprocess.PIPE) for _ in range(2)]
    try:
        mine = [relay_of_session(server, session) for session in sessions]
        assert mine[0] != mine[1]
        status = server.status()
        supervisor, socket_path = status["pid"], status["socket"]
        held_by_supervisor = set(descriptors(supervisor).values())
        assert any(t.startswith("socket:[") for t in held_by_supervisor)
        for me, other, session in [
            (mine[0], mine[1], sessions[0]),
            (mine[1], mine[0], sessions[1]),
        ]:
            fds = descriptors(me)
            own = {fd: target for fd, target in fds.items() if fd > 2}
            figure(f"relay {me}'s descriptors", sorted(fds.items()))
            # Nothing past 0-2 that another process of the server holds.
            held_elsewhere = held_by_supervisor | set(descriptors(other).values())
            assert not set(own.values()) & held_elsewhere, (own, held_elsewhere)
            # The Jupyter server has let go of the client's socket and of sshd's.
            wait_for(
                lambda me=me: (
                    not (
                        set(socket_inodes(me).values())
                        & set(socket_inodes(server.process.pid).values())
                    )
                ),
                10,
                "the Jupyter server to close its copies",
            )
            sockets = sorted(what_socket(me, fd) for fd in socket_inodes(me) if fd > 2)
            (port,) = client_ports(session, server.port)
            assert sockets == sorted(
                [
                    ("tcp", server.port, port),  # the client's
                    ("unix", "", socket_path),  # to sshd, through the supervisor's socket
                    ("unix", relay.relay_socket_path(socket_path), ""),  # the route's control
                ]
            ), sockets
            pipes = [target for target in own.values() if not target.startswith("socket:[")]
            assert len(pipes) == 2, own  # both ends of signal.set_wakeup_fd's pipe
            assert len(set(pipes)) == 1, own
            assert pipes[0].startswith("pipe:[")
        for session in sessions:
            session.stdin.write(b"through\n")
            session.stdin.flush()
            assert session.stdout.readline() == b"through\n"
    finally:
        for session in sessions:
            ours.end(session)
    wait_for(lambda: not any(map(procfs.alive, mine)), 10, "the relays to end with their sessions")


# Memory.


def test_a_client_that_stops_reading_does_not_grow_its_relay(once, server, ours):
    """A laptop asleep in the middle of 64 downloads (ssh -L): its relay, which
    holds the connection's buffers now, reads nothing more from sshd than one
    read past what the client's socket took; neither it nor the Jupyter
    server grows."""
    channels = 64
    jupyter = server.process.pid
    source = ZeroSource()
    local_port = free_port()
    forward = subprocess.Popen(
        ours.ssh_argv(options=["-N", "-L", f"{local_port}:127.0.0.1:{source.port}"]),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=ours.env,
    )  # fmt: skip
    downloads = []
    try:
        wait_for(lambda: connectable(local_port), 30, "the forwarded port")
        downloads = [
            socket.create_connection(("127.0.0.1", local_port), timeout=30) for _ in range(channels)
        ]
        wait_for(lambda: source.accepted > channels, 30, "sshd to open every channel")
        mine = relay_of_session(server, forward)
        proxy = proxy_command_of(forward)
        relay_dirty = private_dirty(mine)
        os.kill(proxy, signal.SIGSTOP)
        try:
            with PeakMemory(mine) as relay_peak, PeakMemory(jupyter) as jupyter_peak:
                source.go.set()  # the laptop sleeps, the downloads begin
                time.sleep(10)
            dirty = private_dirty(mine) - relay_dirty
            assert procfs.alive(mine)
        finally:
            os.kill(proxy, signal.SIGCONT)
        figure(
            "relay RSS, 64 channels, client asleep 10 s",
            f"{relay_peak.start / MiB:.1f} MiB, peak growth {relay_peak.growth / MiB:.1f} MiB",
        )
        figure("relay Private_Dirty growth meanwhile", f"{dirty / MiB:.1f} MiB")
        figure("Jupyter RSS growth meanwhile", f"{jupyter_peak.growth / MiB:.1f} MiB")
        assert relay_peak.growth < 8 * MiB, f"the relay grew by {relay_peak.growth / MiB:.0f} MiB"
        assert dirty < 8 * MiB
        assert jupyter_peak.growth < 16 * MiB
        # Awake again: every download goes on.
        for download in downloads:
            received = 0
            while received < MiB:
                chunk = download.recv(MiB)
                assert chunk.count(0) == len(chunk) > 0
                received += len(chunk)
    finally:
        for download in downloads:
            download.close()
        source.close()
        terminate(forward)


def test_pings_from_a_client_that_reads_nothing_do_not_grow_its_relay(once, server):
    """A client that floods pings of 125 bytes and never reads: each ping
    asks for a pong, which cannot be written. The relay keeps at most the
    latest pong (RFC 6455, 5.5.3: a pong may answer only the latest ping),
    and stops reading while it cannot write, so TCP pushes back on the
    client; its memory stays where it was."""
    ws = RawWebSocket(server)
    mine = relay_of_websocket(server, ws)
    bound = 16 * MiB
    # One ping a write, so that the relay reads few at a time: it answers
    # the latest of each read (in bulk, one pong per read of pings).
    block = ping_frames(1)
    sent = 0
    stop = threading.Event()

    def flood() -> None:
        nonlocal sent
        ws.sock.settimeout(None)
        with contextlib.suppress(OSError):
            while not stop.is_set():
                ws.sock.sendall(block)
                sent += len(block)

    flooder = threading.Thread(target=flood, daemon=True)
    try:
        with PeakMemory(mine) as peak:
            started = time.monotonic()
            flooder.start()
            # Ten seconds, or until it has grown past the bound (no more is needed to fail).
            while time.monotonic() - started < 10 and peak.growth < 4 * bound:
                time.sleep(0.1)
            stop.set()
        elapsed = time.monotonic() - started
        figure(
            "pings a client sent while reading nothing",
            f"{sent / MiB:.0f} MiB ({sent // len(block)} pings) in {elapsed:.1f} s",
        )
        figure(
            "relay RSS meanwhile",
            f"{peak.start / MiB:.1f} MiB, peak growth {peak.growth / MiB:.1f} MiB",
        )
        assert procfs.alive(mine)
        assert peak.growth < bound, f"the relay grew by {peak.growth / MiB:.0f} MiB"
        server_answers(server)
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.close()
        flooder.join(10)
        wait_for(lambda: not procfs.alive(mine), 20, "the relay to end after its client")


# Ends.


def test_relays_end_when_the_supervisor_is_killed(server, ours):
    """The supervisor SIGKILLed: each relay gets SIGTERM (PR_SET_PDEATHSIG),
    closes its WebSocket with 1001 (going away), and ends; the ssh clients
    exit within a moment, and no relay is left."""
    session = ours.open_session("cat", stdin=subprocess.PIPE)
    ws = RawWebSocket(server)
    try:
        assert ws.receive()[1].startswith(b"SSH-2.0-")
        mine = [relay_of_session(server, session), relay_of_websocket(server, ws)]
        supervisor = server.status()["pid"]
        os.kill(supervisor, signal.SIGKILL)
        started = time.monotonic()
        close = close_frame(ws, within=5)
        closed = time.monotonic() - started
        ws.send(b"", opcode=8)  # answered, as every client does
        session.wait(5)
        exited = time.monotonic() - started
        wait_for(lambda: not any(map(procfs.alive, mine)), 10, "the relays to end")
        ended = time.monotonic() - started
        figure(
            "supervisor killed: WebSocket closed / ssh exited / relays gone after",
            f"{closed:.2f} s / {exited:.2f} s / {ended:.2f} s (close frame {close!r})",
        )
        # 1001 when the relay's SIGTERM comes first; none when sshd's end (its
        # own SIGTERM) does: either is a close frame, not a cut connection.
        assert close in (b"", relay.GOING_AWAY.to_bytes(2, "big") + b"the server is stopping")
        assert session.returncode == 255
        assert ended < 3
    finally:
        ws.close()
        ours.end(session)
        # The next connection starts a new supervisor; it ends what the old one left.
        start_sshd(server)
        remember_processes(server)
    result = ours.ssh("echo back")
    assert result.returncode == 0, result.stderr
    assert not [p for p in mine if procfs.alive(p)]


# Keepalive bound for a client gone with a reset while sshd reads nothing: the
# reset is seen at the first ping (1 s), and nothing is left to do for it.
VANISHED_BOUND = 1 + 1 + 3  # ping interval + ping timeout + a few seconds


def test_a_client_reset_while_sshd_reads_nothing_ends_its_relay(tight):
    """A client pushes bytes at an sshd that reads nothing (stopped), so that
    the relay holds some for sshd and stops reading the client; the client
    then vanishes with a reset (SO_LINGER 0). The relay must not wait for
    sshd: it ends within the keepalive's time and a few seconds."""
    before = connections(tight)
    ws = RawWebSocket(tight)
    held: list[int] = []
    try:
        assert ws.receive()[1].startswith(b"SSH-2.0-")
        sshd = new_connection(tight, before)
        mine = relay_of_websocket(tight, ws)
        with stopped([sshd]) as held:
            pushed = 0
            ws.sock.settimeout(0.5)
            chunk = os.urandom(256 * 1024)
            with contextlib.suppress(socket.timeout, TimeoutError):
                while pushed < 256 * MiB:
                    ws.send(chunk)
                    pushed += len(chunk)
            assert pushed < 256 * MiB, "nothing pushed back"
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.close()
            started = time.monotonic()
            wait_for(lambda: not procfs.alive(mine), 20, "the relay to end")
            ended = time.monotonic() - started
            figure(
                "bytes pushed at a stopped sshd before TCP pushed back", f"{pushed / MiB:.1f} MiB"
            )
            figure("a reset client's relay ended after (pings every 1 s)", f"{ended:.1f} s")
            assert ended < VANISHED_BOUND
        wait_for(lambda: not any(map(procfs.alive, held)), 10, "its sshd to end once continued")
        server_answers(tight)
    finally:
        ws.close()
        for pid in held:
            with contextlib.suppress(ProcessLookupError):
                if procfs.alive(pid):
                    os.kill(pid, signal.SIGKILL)
