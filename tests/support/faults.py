"""What the fault and soak tests share: servers with tight limits, raw
WebSockets, an echo session, peak memory, transfers checked end to end, and
the figures they print (shown with pytest -s) for docs/reliability.md."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jupyter_sshd_proxy import procfs

from .helpers import (
    SSHClient,
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


def start_supervisor(setup, state: Path, socket_path: Path) -> subprocess.Popen:
    """The per-user supervisor alone, as this user, serving socket_path with an
    sshd configured from setup (its host keys and authorized_keys); its
    stderr piped. state: a directory of this user's, mode 0700."""
    from jupyter_sshd_proxy import sshd

    user = sshd.current_user()
    sshd_path = sshd.find_program("sshd", "", "sshd_path")
    config = state / "sshd_config"
    config.write_text(
        sshd.render_sshd_config(
            host_keys=sshd.ensure_host_keys("ssh-keygen", str(setup.host_key_dir), user),
            authorized_keys_files=[str(setup.authorized_keys)],
            user=user,
            log_level="INFO",
            version=sshd.sshd_version(sshd_path),
        )
    )
    return subprocess.Popen(
        [sys.executable, "-m", "jupyter_sshd_proxy.supervisor", f"--state-dir={state}",
         f"--socket={socket_path}", f"--sshd={sshd_path}", f"--config={config}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
