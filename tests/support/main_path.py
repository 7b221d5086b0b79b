"""The main path, run by tests/e2e/test_ssh.py against a Jupyter server and by
tests/hub/test_hub.py again, unchanged, through a real JupyterHub: each module
imports these tests and gives them its own `ssh`, `server` and `account`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading

import pytest

from .helpers import (
    STALL_RETRIES,
    UPGRADE_HEADERS,
    WEBSOCAT_STALLS,
    connectable,
    free_port,
    wait_for,
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_command_output_and_exit_status(ssh):
    result = ssh.ssh("echo hello; exit 7")
    assert result.returncode == 7, result.stderr
    assert result.stdout == b"hello\n"


def test_session_runs_as_the_server_user_in_its_home(ssh, account):
    result = ssh.ssh("id -un; pwd")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == [account.name, str(account.home)]


def test_interactive_shell_gets_a_terminal(ssh):
    argv = ssh.ssh_argv(options=["-tt"])
    result = subprocess.run(
        argv,
        input=b"tty; echo $((6 * 7)); exit 3\n",
        capture_output=True,
        timeout=60,
        check=False,
        env=ssh.env,
    )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 3, output + result.stderr.decode()
    assert "/dev/pts/" in output
    assert "42" in output


@pytest.mark.parametrize("protocol", ["-s", "-O"], ids=["sftp-protocol", "legacy-scp"])
def test_scp_both_ways(ssh, tmp_path, protocol):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    remote = f"scp-test{protocol}.bin"
    result = ssh.run(["scp", protocol, "-q", *ssh.options(), str(upload), ssh.remote(remote)])
    assert result.returncode == 0, result.stderr
    download = tmp_path / "download.bin"
    result = ssh.run(["scp", protocol, "-q", *ssh.options(), ssh.remote(remote), str(download)])
    assert result.returncode == 0, result.stderr
    assert sha256(download.read_bytes()) == sha256(upload.read_bytes())
    assert ssh.ssh(f"rm {remote}").returncode == 0


def test_sftp_batch(ssh, tmp_path):
    upload = tmp_path / "data.bin"
    upload.write_bytes(os.urandom(1024 * 1024))
    batch = tmp_path / "batch"
    remote = f"sftp-test-{ssh.proxy}"
    # "-mkdir": a retried batch (after a websocat stall) finds the directory made.
    batch.write_text(
        f"-mkdir {remote}\n"
        f"put {upload} {remote}/data.bin\n"
        f"ls -l {remote}\n"
        f"get {remote}/data.bin {tmp_path}/back.bin\n"
        f"rm {remote}/data.bin\n"
        f"rmdir {remote}\n"
    )
    result = ssh.run(["sftp", "-b", str(batch), *ssh.options(), ssh.host_alias])
    assert result.returncode == 0, result.stderr
    assert b"data.bin" in result.stdout
    assert (tmp_path / "back.bin").read_bytes() == upload.read_bytes()


def test_rsync_archive_of_a_small_tree(ssh, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    (tree / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (tree / "sub" / "deeper" / "run.sh").chmod(0o755)
    (tree / "link").symlink_to("a.txt")
    os.utime(tree / "a.txt", (1_600_000_000, 1_600_000_000))
    shell = ["-e", ssh.rsync_shell()]
    result = ssh.run(["rsync", "-a", *shell, f"{tree}/", ssh.remote("rsync-test/")])
    assert result.returncode == 0, result.stderr
    back = tmp_path / "back"
    result = ssh.run(["rsync", "-a", *shell, ssh.remote("rsync-test/"), f"{back}/"])
    assert result.returncode == 0, result.stderr
    assert (back / "a.txt").read_text() == "alpha\n"
    assert (back / "a.txt").stat().st_mtime == 1_600_000_000
    assert (back / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()
    assert (back / "sub" / "deeper" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert os.readlink(back / "link") == "a.txt"
    assert ssh.ssh("rm -r rsync-test").returncode == 0


class EchoServer:
    """A TCP server on loopback that sends every byte back."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self):
        self.sock.close()


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("direction", ["-L", "-R"])
def test_port_forwarding_carries_bytes_both_ways(ssh, direction):
    echo = EchoServer()
    payload = os.urandom(1024 * 1024)
    try:
        # Through websocat a stalled forward is tried again (see helpers).
        attempts = 1 + (STALL_RETRIES if ssh.proxy == "websocat" else 0)
        for attempt in range(attempts):
            try:
                assert forward_and_exchange(ssh, direction, echo.port, payload) == payload
                break
            except socket.timeout:  # TimeoutError from Python 3.10 on
                if attempt == attempts - 1:
                    raise
                WEBSOCAT_STALLS.append(f"ssh {direction} forward")
    finally:
        echo.close()


def forward_and_exchange(ssh, direction: str, target: int, payload: bytes) -> bytes:
    listen = free_port()
    forward = ["-N", "-o", "ExitOnForwardFailure=yes",
               direction, f"127.0.0.1:{listen}:127.0.0.1:{target}"]  # fmt: skip
    forwarder = subprocess.Popen(
        ssh.ssh_argv(options=forward), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=ssh.env,
    )  # fmt: skip
    try:
        wait_for(lambda: forwarder.poll() is not None or connectable(listen), 20, "the forward")
        assert forwarder.poll() is None, forwarder.stderr.read()
        return exchange(listen, payload)
    finally:
        ssh.end(forwarder)


def test_a_key_not_in_authorized_keys_is_refused(ssh, stranger_key):
    result = ssh.ssh("true", identity=stranger_key)
    assert result.returncode == 255
    assert b"Permission denied (publickey)." in result.stderr


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
def test_websocket_upgrade_without_a_valid_token_gets_403(server, token):
    status, _ = server.request("GET", "/sshd/", token=token, headers=UPGRADE_HEADERS)
    assert status == 403
