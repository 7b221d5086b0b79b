"""The server's byte path, socket by socket: no hop waits for Nagle's algorithm.

OpenSSH turns Nagle's algorithm off on its own sockets; behind a ProxyCommand
the sockets that carry ssh are the proxies'. Where one of them has it on, each
small message sent while a segment is unacknowledged waits for its ACK: sshd's
window adjustments and sftp's status replies during an upload then wait a
round trip each, and uploads run at half the link's speed (issue 19: 0.5x of
direct ssh at 20 and 60 ms). Tornado leaves Nagle on for a WebSocket (it turns
it back on when the 101 response is done), so the route must turn it off.

The test reads TCP_NODELAY of the real socket of a live session, in the
process that holds it: a copy of the descriptor is taken with pidfd_getfd(2)
(Linux 5.6; root, or the server running as this user). The hops behind it had
it on already: asyncio sets it on the route's connection to the supervisor,
and sshd on its own end once a session starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_sshd_proxy import procfs

from ..support.helpers import SSHClient, wait_for

SYS_PIDFD_GETFD = 438  # the same number on every architecture


def tcp_connections() -> dict[int, tuple[int, int]]:
    """socket inode -> (local port, remote port) of every established TCP
    connection in this network namespace (IPv4 and IPv6)."""
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


def sockets_of(pid: int) -> Iterator[tuple[int, int]]:
    """(descriptor, socket inode) of each socket process pid holds."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    yield int(fd), int(target[len("socket:[") : -1])


def holders(inode: int) -> list[tuple[int, int]]:
    """(pid, descriptor) of every process that holds the socket inode."""
    return [(pid, fd) for pid in procfs.pids() for fd, ino in sockets_of(pid) if ino == inode]


def nodelay(pid: int, fd: int) -> bool:
    """TCP_NODELAY of descriptor fd of process pid, read on a copy of it."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            code = ctypes.get_errno()
            if code == errno.ENOSYS:
                pytest.skip("this kernel has no pidfd_getfd (Linux 5.6)")
            raise OSError(code, f"pidfd_getfd({pid}, {fd}): {os.strerror(code)}")
    finally:
        os.close(pidfd)
    with socket.socket(fileno=copy) as sock:
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def server_side_of(client_pids: list[int], server_port: int) -> list[tuple[int, int]]:
    """(pid, fd) of the server's end of the TCP connection(s) that the client
    processes opened to server_port."""
    connections = tcp_connections()
    client_ports = {
        connections[ino][0]
        for pid in client_pids
        for _, ino in sockets_of(pid)
        if ino in connections and connections[ino][1] == server_port
    }
    return [
        holder
        for ino, (local, remote) in connections.items()
        if local == server_port and remote in client_ports
        for holder in holders(ino)
    ]


@pytest.fixture
def session(ssh):
    """A live ssh session through the server (`cat`, waiting for input)."""
    process = ssh.open_session("cat", stdin=subprocess.PIPE)
    try:
        yield process
    finally:
        ssh.end(process)


def test_the_routes_websocket_has_nagle_off(session, server):
    """The Jupyter server's socket to the client (the WebSocket) has TCP_NODELAY."""
    proxy = procfs.descendants(session.pid)  # the ProxyCommand
    ends = wait_for(
        lambda: server_side_of(proxy, server.port), 10, "the server's end of the WebSocket"
    )
    assert [(pid, fd, nodelay(pid, fd)) for pid, fd in ends] == [
        (pid, fd, True) for pid, fd in ends
    ]


def holders_of_websockets(sessions: list[subprocess.Popen], port: int) -> list[set[int]]:
    """Per session, the pids that hold the server's end of its WebSocket,
    once only one process does (a hand-off closes the route's copy)."""

    def held() -> list[set[int]] | None:
        found = [
            {pid for pid, _ in server_side_of(procfs.descendants(s.pid), port)} for s in sessions
        ]
        return found if all(len(pids) == 1 for pids in found) else None

    return wait_for(held, 10, "each WebSocket's socket held by one process")


def test_the_connection_is_relayed_outside_the_jupyter_server(session, server, ssh):
    """Once the WebSocket is open, its socket belongs to a relay: a process
    the supervisor forked for this connection, not the Jupyter server, whose
    event loop serves the notebooks (relay.py), and at a lower priority, so
    that busy cores serve the notebooks first. It ends with the session."""
    proxy = procfs.descendants(session.pid)

    def relays() -> set[int] | None:
        ends = {pid for pid, _ in server_side_of(proxy, server.port)}
        return ends if ends and server.process.pid not in ends else None

    relay_pids = wait_for(relays, 10, "the WebSocket's socket held by a relay alone")
    assert len(relay_pids) == 1
    (relay,) = relay_pids
    supervisor = procfs.parent(relay)
    assert supervisor is not None
    assert "jupyter_sshd_proxy.supervisor" in procfs.cmdline(supervisor)
    assert procfs.parent(supervisor) == server.process.pid
    assert (
        os.getpriority(os.PRIO_PROCESS, relay) == os.getpriority(os.PRIO_PROCESS, supervisor) + 10
    )
    session.stdin.write(b"echo\n")
    ssh.end(session)
    wait_for(lambda: not procfs.alive(relay), 10, "the relay to end with its session")


@pytest.fixture(scope="module")
def one_relay(setup):
    with setup.running(JUPYTER_SSHD_PROXY_MAX_RELAYS="1") as server:
        yield server


def test_past_max_relays_the_jupyter_server_relays_itself(one_relay, setup, client_key):
    """c.SSHDProxy.max_relays 1: the first session gets a relay, the second
    is relayed by the Jupyter server, as every one was before relays; both work."""
    ssh = SSHClient(one_relay, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")
    sessions = [ssh.open_session("cat", stdin=subprocess.PIPE) for _ in range(2)]
    try:
        first, second = holders_of_websockets(sessions, one_relay.port)
        assert one_relay.process.pid not in first
        assert second == {one_relay.process.pid}
        for session in sessions:
            session.stdin.write(b"through\n")
            session.stdin.flush()
            assert session.stdout.readline() == b"through\n"
    finally:
        for session in sessions:
            ssh.end(session)


def test_a_supervisor_that_does_not_take_the_connection_leaves_it_here(setup, client_key):
    """Its relay socket accepts but never answers (a supervisor busy checking
    sshd, or not itself): after RELAY_ANSWER_SECONDS the Jupyter server relays
    the connection itself, and ssh works."""
    with setup.running() as server:
        relay_path = Path(server.status()["socket"]).parent / "relay"
        relay_path.unlink()
        mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            mute.bind(str(relay_path))
            mute.listen(8)
            ssh = SSHClient(server, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")
            result = ssh.ssh("echo through", timeout=30)
            assert (result.returncode, result.stdout) == (0, b"through\n"), result.stderr
        finally:
            mute.close()
