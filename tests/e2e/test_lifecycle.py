"""Restarts, failures and clean-up of the server side, with real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from ..support.helpers import (
    WEBSOCAT,
    SSHClient,
    process_alive,
    server_processes,
    sshd_processes,
    wait_for,
)
from ..support.servers import remember_processes, start_sshd


@pytest.mark.parametrize("signum", ["SIGKILL", "SIGTERM"])
def test_ssh_works_at_once_after_sshd_is_killed(server, ssh, signum):
    """As a user would: kill sshd, run ssh straight away, no waiting for anything."""
    session = ssh.open_session("sleep 600")  # so that some sshd runs, in any design
    try:
        victims = sshd_processes(server)
        assert victims
        for pid in victims:
            # Killing a session's sshd may already have ended its privilege-separated child.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, getattr(signal, signum))
        result = ssh.ssh("echo back", timeout=20)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"back\n"
    finally:
        ssh.end(session)
    remember_processes(server)


def test_host_key_is_the_same_after_the_server_restarts(setup, client_key):
    with setup.running() as first:
        keys_before = sorted(p.read_text() for p in setup.host_key_dir.glob("*.pub"))
        assert SSHClient(first, client_key, setup.known_hosts).ssh("true").returncode == 0
    second = setup.server().start()
    try:
        start_sshd(second)
        # known_hosts was pinned before the restart, and StrictHostKeyChecking=yes.
        result = SSHClient(second, client_key, setup.known_hosts).ssh("echo same")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"same\n"
        assert sorted(p.read_text() for p in setup.host_key_dir.glob("*.pub")) == keys_before
    finally:
        second.stop()


def test_stopping_the_server_ends_sshd_and_every_session(setup, client_key):
    server = setup.server().start()
    try:
        status = start_sshd(server)
        setup.pin_host_keys()
        ssh = SSHClient(server, client_key, setup.known_hosts)
        session = ssh.open_session("sleep 600")
        sleeper = wait_for(lambda: server_processes(server, "sleep 600"), 10, "the remote sleep")
    finally:
        server.stop()
    assert not process_alive(status["pid"])
    wait_for(lambda: not any(process_alive(p) for p in sleeper), 5, "the session to end")
    session.wait(10)
    session.stdout.close()


def test_supervisor_killed_comes_back_and_ends_what_it_left(server, ssh):
    before = server.status()
    session = ssh.open_session("sleep 600")
    try:
        sleeper = wait_for(lambda: server_processes(server, "sleep 600"), 10, "the remote sleep")
        os.kill(before["pid"], signal.SIGKILL)
        # At once: the route waits for the new supervisor to listen.
        result = ssh.ssh("echo back", timeout=20)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"back\n"
        after = server.status()
        assert after["running"]
        assert after["pid"] != before["pid"]
        assert after["restarts"] == before["restarts"] + 1
        remember_processes(server)
        # The killed supervisor's session: sshd went with it, and the new
        # supervisor ended the command it left.
        wait_for(lambda: not any(map(process_alive, sleeper)), 10, "the old session to end")
        session.wait(10)
    finally:
        ssh.end(session)


def test_sshd_missing_fails_fast_with_one_log_line(setup):
    server = setup.server(JUPYTER_SSHD_PROXY_SSHD_PATH="/nonexistent/sshd").start()
    try:
        argv = [WEBSOCAT, "--binary", "-E", f"-H=Authorization: token {server.token}",
                f"ws://127.0.0.1:{server.port}/sshd/"]  # fmt: skip
        ssh = ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "ProxyCommand=" + " ".join(
            f"'{a}'" for a in argv), "nohost"]  # fmt: skip
        started = time.monotonic()
        result = subprocess.run(
            ssh, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
        )
        elapsed = time.monotonic() - started
        assert result.returncode == 255
        assert elapsed < 2, f"took {elapsed:.1f}s"
        lines = [line for line in server.log().splitlines() if "/nonexistent/sshd" in line]
        assert len(lines) == 1, lines
        assert lines[0].endswith(
            "jupyter-sshd-proxy: sshd not found at /nonexistent/sshd (c.SSHDProxy.sshd_path"
            " / JUPYTER_SSHD_PROXY_SSHD_PATH); correct that setting, or unset it to use the"
            " sshd of openssh-server (Debian/Ubuntu) or openssh (conda-forge)"
        )
        assert "Traceback" not in server.log()
        assert server.status()["last_error"].startswith("sshd not found at /nonexistent/sshd")
    finally:
        server.stop()
