"""Attacks on the running system: kills, stops, vanished clients, bad input, bulk data.

Each fault is survived, or fails in one line within 2 s, never hangs; the
Jupyter server stays up and other sessions go on; nothing is left behind. The
long versions run with JUPYTER_SSHD_PROXY_SOAK=1 (marker soak), and print the
figures they reach.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shlex
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

import pytest

from jupyter_sshd_proxy import procfs

from .conftest import start_sshd
from .helpers import (
    SSHClient,
    assert_one_clear_failure,
    connectable,
    free_port,
    server_processes,
    sshd_banner,
    terminate,
    wait_for,
)

MiB = 1024 * 1024


def figure(what: str, value: object) -> None:
    """A number for docs/reliability.md (shown with pytest -s)."""
    print(f"\nfigure: {what}: {value}")  # noqa: T201


@pytest.fixture
def once(account):
    """For the heavy tests: run them for one account only, the unprivileged one
    when the suite runs as root (as in a Hub container)."""
    if account.is_current and os.getuid() == 0:
        pytest.skip("heavy: runs once, with the server as the unprivileged account")


@pytest.fixture
def ours(server, setup, client_key):
    """ssh with our own ProxyCommand (websocat retries its own stalls)."""
    return SSHClient(server, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")


def proxy_command_of(ssh_process: subprocess.Popen) -> int:
    """The pid of the ProxyCommand that an ssh process started."""
    return wait_for(
        lambda: next(
            (
                pid
                for pid in procfs.descendants(ssh_process.pid)
                if " proxy http" in procfs.cmdline(pid)
            ),
            None,
        ),
        10,
        "the ProxyCommand",
    )


class ZeroSource:
    """A TCP server next to the Jupyter server that sends zeros to whoever
    connects, as fast as they take them, from the moment go is set."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.go = threading.Event()
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._send, args=(conn,), daemon=True).start()

    def _send(self, conn):
        zeros = bytes(MiB)
        self.go.wait()
        with conn, contextlib.suppress(OSError):
            while True:
                conn.sendall(zeros)

    def close(self):
        self.go.set()
        self.sock.close()


def test_a_client_that_stops_reading_does_not_grow_the_server(once, server, ours):
    """A laptop asleep in the middle of downloads: the Jupyter server keeps at
    most about a MiB per connection, however many SSH channels are sending
    and however long the laptop sleeps. (SSH's flow control alone lets each
    channel send 2 MiB ahead, so 64 forwarded ports made it keep ~100 MiB.)"""
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
        # (and one more: the connection that found the port open)
        wait_for(lambda: source.accepted > channels, 30, "sshd to open every channel")
        baseline = procfs.rss_bytes(jupyter)
        proxy = proxy_command_of(forward)
        os.kill(proxy, signal.SIGSTOP)
        source.go.set()  # the laptop sleeps, the downloads begin
        try:
            peak = 0
            for _ in range(30):
                time.sleep(1)
                peak = max(peak, procfs.rss_bytes(jupyter) - baseline)
            assert server.process.poll() is None
        finally:
            os.kill(proxy, signal.SIGCONT)
        figure("Jupyter RSS growth, 64 channels, client asleep 30 s", f"{peak / MiB:.1f} MiB")
        assert peak < 16 * MiB, f"the Jupyter server grew by {peak / MiB:.0f} MiB"
        # Awake again: every download goes on.
        for download in downloads:
            received = 0
            while received < 4 * MiB:
                chunk = download.recv(MiB)
                assert chunk.count(0) == len(chunk) > 0
                received += len(chunk)
    finally:
        for download in downloads:
            download.close()
        source.close()
        terminate(forward)


# A server with tight limits, so that the bounds show within seconds: at most
# 4 connections waiting to log in, 3 s to log in, WebSocket pings every second.
TIGHT_ENV = {
    "JUPYTER_SSHD_PROXY_MAX_UNAUTHENTICATED": "4",
    "JUPYTER_SSHD_PROXY_EXTRA_OPTIONS": "LoginGraceTime 3",
}
TIGHT_ARGS = ["--ServerApp.websocket_ping_interval=1", "--ServerApp.websocket_ping_timeout=1"]
# Ping, no pong for a second, close; tornado gives up on the close handshake
# after 5 s; sshd ends at once when its connection does.
KEEPALIVE_BOUND = 1 + 1 + 5 + 2


@pytest.fixture(scope="module")
def tight(setup):
    with setup.running(*TIGHT_ARGS, **TIGHT_ENV) as server:
        yield server


@pytest.fixture
def tight_ssh(tight, setup, client_key):
    return SSHClient(tight, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")


class PeakMemory:
    """Samples a process's resident memory in the background; growth is the
    highest it reached above where it began."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start = procfs.rss_bytes(pid) or 0
        self.peak = self.start
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, procfs.rss_bytes(self.pid) or 0)
            time.sleep(0.1)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.running = False
        self.thread.join(5)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def connections(server) -> list[int]:
    """The per-connection sshd processes (the supervisor's sshd children)."""
    supervisor = server.status()["pid"]
    return [
        pid
        for pid in procfs.children(supervisor)
        if (procfs.program(pid) or "").startswith("sshd") and procfs.alive(pid)
    ]


def connection_tree(pid: int) -> list[int]:
    return [pid, *procfs.descendants(pid)]


def server_answers(server, within: float = 2.0) -> None:
    """The Jupyter server answers an API call at once: it is neither dead nor frozen."""
    started = time.monotonic()
    assert server.process.poll() is None, server.log()[-2000:]
    assert server.request("GET", "/api/status")[0] == 200
    assert time.monotonic() - started < within


class Echo:
    """An ssh session running a line echo, to show that it is unaffected."""

    def __init__(self, ssh: SSHClient):
        self.process = ssh.open_session("cat", stdin=subprocess.PIPE)

    def works(self, within: float = 5.0) -> bool:
        word = os.urandom(6).hex()
        self.process.stdin.write(f"{word}\n".encode())
        self.process.stdin.flush()
        reply = []
        reader = threading.Thread(
            target=lambda: reply.append(self.process.stdout.readline()), daemon=True
        )
        reader.start()
        reader.join(within)
        return reply == [f"{word}\n".encode()]

    def close(self, ssh: SSHClient) -> None:
        ssh.end(self.process)


class RawWebSocket:
    """A WebSocket to /sshd/ spoken by hand, to send what no client would."""

    def __init__(self, server, timeout: float = 10):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /sshd/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: token {server.token}\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed the upgrade"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, payload: bytes, opcode: int = 2) -> None:
        """One frame, masked with a zero key (as valid as any)."""
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        self.sock.sendall(header + b"\0\0\0\0" + payload)

    def _read(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def receive(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next frame from the server; None when it hung up."""
        head = self._read(2)
        if head is None:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        payload = self._read(length)
        return None if payload is None else (opcode, payload)

    def closed_by_server(self, within: float) -> int | None:
        """Read until the server closes; the close code (or 0 for no close frame).
        Fails if the server is still talking after `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                frame = self.receive()
            except (socket.timeout, TimeoutError):
                raise AssertionError(f"the server did not close within {within}s") from None
            except ConnectionResetError:
                return 0
            if frame is None:
                return 0
            if frame[0] == 8:
                return struct.unpack("!H", frame[1][:2])[0] if len(frame[1]) >= 2 else 0

    def answer_pings(self) -> None:
        """From now on, read in the background: answer pings as every client
        does, keep the other frames, note when the server hangs up."""
        self.frames: list[tuple[int, bytes]] = []
        self.ended_at: float | None = None

        def read():
            self.sock.settimeout(None)
            with contextlib.suppress(OSError):
                while (frame := self.receive()) is not None and frame[0] != 8:
                    if frame[0] == 9:
                        self.send(frame[1], opcode=10)
                    else:
                        self.frames.append(frame)
            self.ended_at = time.monotonic()

        threading.Thread(target=read, daemon=True).start()

    def close(self) -> None:
        """Hang up without a close frame."""
        self.sock.close()


def new_connection(server, before: list[int]) -> int:
    return wait_for(
        lambda: next((p for p in connections(server) if p not in before), None),
        10,
        "sshd for the new connection",
    )


# Faults.


@pytest.mark.parametrize("signum", ["SIGKILL", "SIGTERM", "SIGSTOP"])
def test_one_sessions_sshd_killed_or_frozen_leaves_the_rest_alone(tight, tight_ssh, signum):
    echo = Echo(tight_ssh)
    try:
        before = connections(tight)
        victim = subprocess.Popen(
            tight_ssh.ssh_argv("echo up; exec sleep 600"), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tight_ssh.env,
        )  # fmt: skip
        assert victim.stdout.readline() == b"up\n"
        sshd = new_connection(tight, before)
        tree = [p for p in connection_tree(sshd) if (procfs.program(p) or "").startswith("sshd")]
        for pid in tree:
            os.kill(pid, getattr(signal, signum))
        try:
            if signum != "SIGSTOP":
                # The session it served ends, with one line, at once.
                victim.wait(2)
                assert victim.returncode == 255
                assert_one_clear_failure(victim.stderr.read())
            server_answers(tight)
            assert echo.works(), "another session stopped working"
            started = time.monotonic()
            result = tight_ssh.ssh("echo new")
            assert result.returncode == 0, result.stderr
            assert time.monotonic() - started < 5
        finally:
            if signum == "SIGSTOP":
                for pid in tree:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            tight_ssh.end(victim)
    finally:
        echo.close(tight_ssh)


def test_a_frozen_sshd_does_not_grow_the_server_with_uploads(tight):
    """A client that pushes bytes at a stopped sshd, ignoring SSH's flow control:
    the Jupyter server stops reading its frames instead of keeping them."""
    jupyter = tight.process.pid
    before = connections(tight)
    ws = RawWebSocket(tight)
    try:
        assert ws.receive()[1].startswith(b"SSH-2.0-")
        sshd = new_connection(tight, before)
        os.kill(sshd, signal.SIGSTOP)
        baseline = procfs.rss_bytes(jupyter)
        pushed = 0
        ws.sock.settimeout(0.5)
        chunk = os.urandom(256 * 1024)
        with contextlib.suppress(socket.timeout, TimeoutError):
            while pushed < 512 * MiB:
                ws.send(chunk)
                pushed += len(chunk)
        growth = procfs.rss_bytes(jupyter) - baseline
        figure("bytes a client pushed at a stopped sshd before TCP pushed back", pushed)
        figure("Jupyter RSS growth meanwhile", f"{growth / MiB:.1f} MiB")
        assert pushed < 64 * MiB, "nothing pushed back"
        assert growth < 32 * MiB
        server_answers(tight)
        os.kill(sshd, signal.SIGKILL)  # (which a stopped process obeys too)
    finally:
        ws.close()


def test_restarting_the_jupyter_server_with_sessions_open(setup, client_key):
    with setup.running() as server:
        ssh = SSHClient(server, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")
        keys = sorted(p.read_bytes() for p in setup.host_key_dir.glob("*.pub"))
        sessions = [ssh.open_session("sleep 600") for _ in range(3)]
        sleepers = wait_for(
            lambda: (lambda found: found if len(found) == 3 else None)(
                server_processes(server, "sleep 600")
            ),
            10,
            "three remote sleeps",
        )
    for session in sessions:
        # Each client ends cleanly, at once, with one line.
        session.wait(5)
        assert session.returncode == 255
        session.stdout.close()
    wait_for(lambda: not any(map(procfs.alive, sleepers)), 5, "the sessions to end")
    again = setup.server().start()
    try:
        start_sshd(again)
        ssh = SSHClient(again, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")
        # known_hosts is the one pinned before, with StrictHostKeyChecking=yes.
        result = ssh.ssh("echo again")
        assert result.returncode == 0, result.stderr
        assert sorted(p.read_bytes() for p in setup.host_key_dir.glob("*.pub")) == keys
    finally:
        again.stop()


def test_the_jupyter_server_killed_takes_every_session_with_it(setup, client_key):
    with setup.running() as server:
        ssh = SSHClient(server, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")
        session = ssh.open_session("sleep 600")
        try:
            wait_for(lambda: server_processes(server, "sleep 600"), 10, "the remote sleep")
            everything = server_processes(server)
            server.process.kill()  # no clean-up of its own
            server.process.wait(10)
            wait_for(lambda: not any(map(procfs.alive, everything)), 10, "every process to end")
            session.wait(10)
        finally:
            ssh.end(session)


def test_client_killed_mid_transfer(tight, tight_ssh, tmp_path):
    """The laptop dies during an upload: the server's side of it ends at once."""
    before = connections(tight)
    upload = subprocess.Popen(
        tight_ssh.ssh_argv("cat > /dev/null"),
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=tight_ssh.env,
    )  # fmt: skip
    try:
        upload.stdin.write(os.urandom(4 * MiB))
        upload.stdin.flush()
        sshd = new_connection(tight, before)
        tree = connection_tree(sshd)
        for pid in [*procfs.descendants(upload.pid), upload.pid]:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(map(procfs.alive, tree)), 5, "the server's side to end")
    finally:
        with contextlib.suppress(BrokenPipeError):
            upload.stdin.close()
        upload.wait(10)


def test_websocket_dropped_without_a_close_frame(tight):
    before = connections(tight)
    ws = RawWebSocket(tight)
    assert ws.receive()[1].startswith(b"SSH-2.0-")
    sshd = new_connection(tight, before)
    ws.close()
    wait_for(lambda: not procfs.alive(sshd), 5, "sshd to end")
    server_answers(tight)


def test_a_client_that_vanished_is_ended_by_keepalives(tight, tight_ssh):
    """A laptop that stops answering (asleep, network gone) without closing:
    no pong comes back, the WebSocket is closed, and the session ends."""
    before = connections(tight)
    # cat ends when sshd closes its input, as transfers (scp -t, rsync) do. (A
    # command that reads nothing, such as sleep, goes on as with any sshd,
    # until the Jupyter server stops.)
    session = tight_ssh.open_session("cat", stdin=subprocess.PIPE)
    client = [session.pid, *procfs.descendants(session.pid)]
    try:
        sshd = new_connection(tight, before)
        tree = connection_tree(sshd)
        for pid in client:
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        wait_for(lambda: not any(map(procfs.alive, tree)), 30, "the session to end")
        ended = time.monotonic() - started
        figure("a vanished client's session ended after (pings every 1 s)", f"{ended:.1f} s")
        assert ended < KEEPALIVE_BOUND
    finally:
        for pid in client:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        session.wait(10)
        session.stdout.close()
        session.stdin.close()


# Bad input.


def test_connections_waiting_to_log_in_are_bounded(tight, tight_ssh):
    """Half-open WebSockets that never send a byte: at most 4 get an sshd, 4
    more wait for their turn, the rest are closed at once, and sshd ends each
    after LoginGraceTime (3 s)."""
    echo = Echo(tight_ssh)
    sockets = []
    try:
        before = connections(tight)
        started = time.monotonic()
        sockets = [RawWebSocket(tight) for _ in range(12)]
        for ws in sockets[:8]:
            ws.answer_pings()  # so that only the login grace time can end them
        for ws in sockets[8:]:
            assert ws.closed_by_server(within=2) is not None
        assert echo.works(), "the established session stopped working"
        most = 0
        while not all(ws.ended_at for ws in sockets[:8]):
            most = max(most, len([p for p in connections(tight) if p not in before]))
            assert time.monotonic() - started < 15, "the waiting ones were not ended"
            time.sleep(0.05)
        assert most == 4
        # Which of them got an sshd first is up to the order in which the route
        # reached the port, not the order they were opened in.
        served = [ws for ws in sockets[:8] if ws.frames]
        assert len(served) >= 4, [ws.frames for ws in sockets[:8]]
        for ws in served:
            assert ws.frames[0][1].startswith(b"SSH-2.0-")
            assert 2.5 < ws.ended_at - started < 8  # LoginGraceTime 3
        result = tight_ssh.ssh("echo in")
        assert result.returncode == 0, result.stderr
        assert "max_unauthenticated" in tight.log()
    finally:
        for ws in sockets:
            ws.close()
        echo.close(tight_ssh)


def test_idle_websockets_hold_bounded_resources(once, server):
    """The measurement of the issue: 400 idle WebSockets. With the default
    limit, at most 32 get an sshd, 32 more wait, the rest are closed at once."""
    jupyter = server.process.pid
    wait_for(lambda: not connections(server), 10, "no connections")
    fds_before = procfs.open_fds(jupyter)
    sockets = []
    try:
        for _ in range(400):
            with contextlib.suppress(AssertionError, OSError):
                sockets.append(RawWebSocket(server))
        held = connections(server)
        memory = sum(procfs.pss_bytes(p) or 0 for pid in held for p in connection_tree(pid))
        # The refused ones are closed at once; tornado waits up to 5 s for
        # each client's goodbye (ours never says it) before letting go.
        wait_for(
            lambda: procfs.open_fds(jupyter) - fds_before <= 4 * 32 + 8, 15, "refused ones closed"
        )
        fds = procfs.open_fds(jupyter) - fds_before
        figure("400 idle WebSockets: sshd processes", len(held))
        figure("400 idle WebSockets: their memory (Pss)", f"{memory / MiB:.0f} MiB")
        figure("400 idle WebSockets: file descriptors in the Jupyter server", fds)
        assert len(held) <= 32
        server_answers(server)
    finally:
        for ws in sockets:
            ws.close()
    wait_for(lambda: not connections(server), 10, "the idle connections to end")


@pytest.mark.parametrize(
    ("what", "frames"),
    [
        ("garbage", [(2, b"\x00\xff" * 5000)]),
        ("text", [(1, b"GET / HTTP/1.1\r\n\r\n")]),
        ("banner then junk", [(2, b"SSH-2.0-OpenSSH_9.9\r\n"), (2, os.urandom(70000))]),
        ("over the message limit", [(2, bytes(11 * MiB))]),
    ],
)
def test_bad_input_closes_that_connection_only(tight, tight_ssh, what, frames):
    echo = Echo(tight_ssh)
    try:
        before = connections(tight)
        ws = RawWebSocket(tight)
        try:
            assert ws.receive()[1].startswith(b"SSH-2.0-")
            sshd = new_connection(tight, before)
            for opcode, payload in frames:
                with contextlib.suppress(OSError):
                    ws.send(payload, opcode)
            code = ws.closed_by_server(within=2)
            if what == "over the message limit":
                assert code == 1009  # tornado's "message too big"
            wait_for(lambda: not procfs.alive(sshd), 2, "its sshd to end")
        finally:
            ws.close()
        server_answers(tight)
        assert echo.works(), "another session stopped working"
        assert "Traceback" not in tight.log()
    finally:
        echo.close(tight_ssh)


def rapid_upgrades(server, ssh: SSHClient, attempts: int) -> None:
    """attempts WebSocket upgrades from 10 threads, each hung up at once (half
    after a line that is not SSH), while a session goes on; then everything
    they held is let go, and ssh works."""
    jupyter = server.process.pid
    echo = Echo(ssh)
    try:
        fds_before = procfs.open_fds(jupyter)
        done = []

        def hammer(count):
            for i in range(count):
                ws = RawWebSocket(server)
                if i % 2:
                    with contextlib.suppress(OSError):
                        ws.send(b"not ssh\r\n")
                ws.close()
                done.append(1)

        started = time.monotonic()
        with PeakMemory(jupyter) as peak:
            threads = [threading.Thread(target=hammer, args=(attempts // 10,)) for _ in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(attempts)
        elapsed = time.monotonic() - started
        figure("rapid WebSocket upgrades", f"{len(done)} in {elapsed:.0f} s")
        figure("Jupyter peak RSS growth meanwhile", f"{peak.growth / MiB:.1f} MiB")
        assert len(done) == attempts
        server_answers(server)
        assert echo.works(), "the established session stopped working"
        wait_for(lambda: len(connections(server)) <= 1, 10, "the attempts' sshd to end")
        wait_for(lambda: procfs.open_fds(jupyter) <= fds_before + 4, 10, "fds to be closed")
        result = ssh.ssh("echo still")
        assert result.returncode == 0, result.stderr
    finally:
        echo.close(ssh)


def test_a_thousand_rapid_upgrades(tight, tight_ssh):
    rapid_upgrades(tight, tight_ssh, 1000)


@pytest.mark.soak
def test_soak_ten_thousand_rapid_upgrades(once, tight, tight_ssh):
    rapid_upgrades(tight, tight_ssh, 10_000)


@pytest.mark.soak
def test_soak_sshd_killed_again_and_again(once, server, ours):
    """Kill a session's sshd, connect at once, a hundred times over."""
    rounds = 100
    for round_number in range(rounds):
        before = connections(server)
        session = ours.open_session("sleep 600")
        try:
            sshd = new_connection(server, before)
            os.kill(sshd, signal.SIGKILL if round_number % 2 else signal.SIGTERM)
            result = ours.ssh("echo back")
            assert result.returncode == 0, (round_number, result.stderr)
            assert result.stdout == b"back\n"
        finally:
            ours.end(session)
    figure("sshd killed, then ssh at once", f"{rounds} of {rounds} worked")


# Data integrity.


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def make_file(path, size: int) -> str:
    with open(path, "wb") as stream:
        for _ in range(size // MiB):
            stream.write(os.urandom(MiB))
    return sha256_file(path)


def transfer(ssh: SSHClient, tool: str, local, remote: str, upload: bool) -> subprocess.Popen:
    source, target = (
        (str(local), ssh.remote(remote)) if upload else (ssh.remote(remote), str(local))
    )
    if tool == "scp":
        argv = ["scp", "-q", *ssh.options(), source, target]
    elif tool == "rsync":
        argv = ["rsync", "-e", ssh.rsync_shell(), source, target]
    else:
        verb = f"put {source} {remote}" if upload else f"get {remote} {target}"
        argv = ["sh", "-c", f"echo {shlex.quote(verb)} | sftp -q -b - "
                + shlex.join([*ssh.options(), ssh.host_alias])]  # fmt: skip
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=ssh.env,
    )  # fmt: skip


def move_and_verify(ssh: SSHClient, tmp_path, sessions: int, size: int) -> int:
    """sessions concurrent transfers up (scp, sftp, rsync in turn), then the same
    down again; every file's sha256 compared. Returns the bytes moved."""
    tools = ["scp", "sftp", "rsync"]
    sources = [tmp_path / f"source-{i}" for i in range(3)]
    digests = [make_file(path, size) for path in sources]
    names = [f"integrity-{ssh.proxy}-{i}.bin" for i in range(sessions)]
    for upload in (True, False):
        running = []
        for i, name in enumerate(names):
            local = sources[i % 3] if upload else tmp_path / f"back-{i}"
            running.append(transfer(ssh, tools[i % 3], local, name, upload))
        for i, process in enumerate(running):
            _, err = process.communicate(timeout=600)
            assert process.returncode == 0, f"{tools[i % 3]} {'up' if upload else 'down'}: {err}"
    for i in range(sessions):
        assert sha256_file(tmp_path / f"back-{i}") == digests[i % 3], names[i]
        (tmp_path / f"back-{i}").unlink()
    result = ssh.ssh("rm -f " + " ".join(names))
    assert result.returncode == 0, result.stderr
    return 2 * sessions * size


def test_twenty_concurrent_transfers_both_ways(once, server, ours, tmp_path):
    with PeakMemory(server.process.pid) as peak:
        moved = move_and_verify(ours, tmp_path, sessions=20, size=64 * MiB)
    figure("bytes moved and verified (20 sessions)", f"{moved / 1024**3:.1f} GiB")
    figure("Jupyter peak RSS growth meanwhile", f"{peak.growth / MiB:.1f} MiB")


@pytest.mark.soak
def test_soak_many_concurrent_transfers_both_ways(once, server, ours, tmp_path):
    with PeakMemory(server.process.pid) as peak:
        moved = move_and_verify(ours, tmp_path, sessions=40, size=256 * MiB)
    figure("bytes moved and verified (40 sessions)", f"{moved / 1024**3:.1f} GiB")
    figure("Jupyter peak RSS growth meanwhile", f"{peak.growth / MiB:.1f} MiB")


def test_rsync_interrupted_mid_file_resumes_to_an_equal_file(once, ours, tmp_path):
    source = tmp_path / "big.bin"
    digest = make_file(source, 256 * MiB)
    remote = "rsync-resume.bin"
    shell = ["-e", ours.rsync_shell()]
    first = subprocess.Popen(
        ["rsync", "--partial", "--bwlimit=20000", *shell, str(source), ours.remote(remote)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=ours.env,
    )  # fmt: skip
    time.sleep(3)
    for pid in [*procfs.descendants(first.pid), first.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    first.wait(10)

    def partial_size():
        result = ours.ssh(f"stat -c %s {remote} 2>/dev/null || echo 0")
        return int(result.stdout or 0)

    # The server's rsync keeps what it received (--partial) once it sees the end.
    kept = wait_for(partial_size, 10, "the partial file")
    assert 0 < kept < 256 * MiB, kept
    second = ours.run(["rsync", "--partial", *shell, str(source), ours.remote(remote)], 300)
    assert second.returncode == 0, second.stderr
    back = tmp_path / "back.bin"
    result = ours.run(["rsync", *shell, ours.remote(remote), str(back)], 300)
    assert result.returncode == 0, result.stderr
    assert sha256_file(back) == digest
    assert ours.ssh(f"rm -f {remote}").returncode == 0


# An sshd that can never start.


def test_a_broken_sshd_fails_fast_backs_off_and_says_why_once(setup, client_key):
    """sshd breaks while the server runs (a package upgrade gone wrong): every
    connection fails at once, the log says why in one line (not one per
    connection), status shows it, and mending it needs no restart."""
    wrapper = setup.base / "sshd-that-breaks"
    marker = setup.base / "sshd-is-broken"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"if [ -e {shlex.quote(str(marker))} ]; then\n"
        '    echo "sshd: broken on purpose" >&2; exit 1\n'
        "fi\n"
        'exec /usr/sbin/sshd "$@"\n'
    )
    wrapper.chmod(0o755)
    setup.account.own(wrapper)
    with setup.running(JUPYTER_SSHD_PROXY_SSHD_PATH=str(wrapper)) as server:
        ssh = SSHClient(server, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")
        assert ssh.ssh("true").returncode == 0
        marker.touch()
        for _ in range(5):
            started = time.monotonic()
            result = ssh.ssh("true")
            assert result.returncode == 255
            assert time.monotonic() - started < 2
            assert_one_clear_failure(result.stderr)

        def said_why() -> list[str]:
            return [line for line in server.log().splitlines() if "sshd cannot start" in line]

        lines = wait_for(said_why, 5, "the line that says why sshd cannot start")
        assert len(lines) == 1, lines
        assert lines[0].startswith("jupyter-sshd-proxy: sshd cannot start: sshd: broken on purpose")
        # Once the supervisor knows, it starts no sshd: sshd's own complaint stops.
        complaints = server.log().count("sshd: broken on purpose")
        for _ in range(3):
            assert ssh.ssh("true").returncode == 255
        assert server.log().count("sshd: broken on purpose") == complaints
        status = server.status()
        assert status["running"] is False
        assert status["last_error"].startswith("sshd cannot start: sshd: broken on purpose")
        marker.unlink()
        wait_for(lambda: ssh.ssh("true").returncode == 0, 15, "ssh to work again", 0.5)
        assert server.status()["running"] is True
        assert server.status()["last_error"] is None
        assert "jupyter-sshd-proxy: sshd starts again" in server.log()
        marker.unlink(missing_ok=True)


def test_a_socket_directory_others_could_enter_is_retried_with_one_line(setup, tmp_path):
    """The supervisor alone, asked for a socket in a directory that other
    accounts could enter: it does not listen there (one line, status says why)
    until the directory is private, then serves."""
    from jupyter_sshd_proxy import sshd

    if not setup.account.is_current:
        pytest.skip("runs the supervisor as this user")
    user = sshd.current_user()
    sshd_path = sshd.find_program("sshd", "", "sshd_path")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    config = state / "sshd_config"
    socket_dir = tmp_path / "socket"
    socket_dir.mkdir()
    socket_dir.chmod(0o755)
    socket_path = socket_dir / "socket"
    config.write_text(
        sshd.render_sshd_config(
            host_keys=sshd.ensure_host_keys("ssh-keygen", str(setup.host_key_dir), user),
            authorized_keys_files=[str(setup.authorized_keys)],
            user=user,
            log_level="INFO",
            version=sshd.sshd_version(sshd_path),
        )
    )
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "jupyter_sshd_proxy.supervisor", f"--state-dir={state}",
         f"--socket={socket_path}", f"--sshd={sshd_path}", f"--config={config}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    expected = (
        f"cannot listen on {socket_path}: its directory {socket_dir} is mode 0755, so other "
        "accounts could connect; it must be 0700"
    )
    try:
        status = state / "status.json"
        wait_for(status.exists, 10, "status.json")
        time.sleep(4)  # tries at 0, 0.5, 1.5 and 3.5 s
        written = json.loads(status.read_text())
        assert written["serving"] is False
        assert written["last_error"] == expected
        assert not socket_path.exists()
        socket_dir.chmod(0o700)
        wait_for(lambda: json.loads(status.read_text())["serving"], 15, "the socket to be made")
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(10)
            conn.connect(str(socket_path))
            assert sshd_banner(conn).startswith(b"SSH-2.0-")
    finally:
        supervisor.terminate()
        _, stderr = supervisor.communicate(timeout=30)
    lines = stderr.decode().splitlines()
    assert lines[0] == f"jupyter-sshd-proxy: {expected}; trying again"
    assert sum("cannot listen" in line for line in lines) == 1, lines
    assert f"jupyter-sshd-proxy: listening on {socket_path} again" in lines
    assert supervisor.returncode == 128 + signal.SIGTERM
    assert not socket_path.exists()  # removed when it stopped
