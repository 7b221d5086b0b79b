"""Attacks on the running system: kills, stops, vanished clients, bad input, bulk data.

Each fault is survived, or fails in one line within 2 s, never hangs; the
Jupyter server stays up and other sessions go on; nothing is left behind. The
long versions run with JUPYTER_SSHD_PROXY_SOAK=1 (marker soak), and print the
figures they reach.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from jupyter_sshd_proxy import procfs

from .helpers import SSHClient, free_port, wait_for

MiB = 1024 * 1024


def figure(what: str, value: object) -> None:
    """A number for the README's reliability section (shown with pytest -s)."""
    print(f"\nfigure: {what}: {value}")  # noqa: T201


def connectable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


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
        forward.terminate()
        forward.communicate(timeout=30)
