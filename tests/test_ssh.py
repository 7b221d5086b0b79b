"""The main path: real ssh, scp, sftp and rsync through a real Jupyter server.

Every test runs twice when the suite runs as root: with the server as this
user, and as a fresh unprivileged system account, as in a Hub container.
websocat is the ProxyCommand here, so nothing of ours runs on the client side.
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
    VENV_BIN,
    WEBSOCAT_STALLS,
    connect_unix,
    connectable,
    free_port,
    sshd_banner,
    unix_proxy_command,
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


def test_session_sees_the_server_environment(setup, account, client_key):
    from .helpers import SSHClient

    server = setup.server(JUPYTERHUB_EXAMPLE="from the hub", ODD_VALUE='a "quoted" \\ value')
    server.start()
    try:
        from .conftest import start_sshd

        start_sshd(server)
        ssh = SSHClient(server, client_key, setup.known_hosts)
        result = ssh.ssh('echo "$JUPYTERHUB_EXAMPLE"; echo "$ODD_VALUE"; command -v python')
        assert result.returncode == 0, result.stderr
        hub_value, odd_value, python = result.stdout.decode().splitlines()
        assert hub_value == "from the hub"
        assert odd_value == 'a "quoted" \\ value'
        if not account.is_current:
            # A fresh account's shell leaves PATH alone (ours may have pyenv in ~/.bashrc).
            assert python == str(VENV_BIN / "python")
    finally:
        server.stop()


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


def test_binary_stdin_stdout_round_trip_16_mib(ssh):
    data = os.urandom(16 * 1024 * 1024)
    result = ssh.ssh("cat", input=data, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == len(data)
    assert sha256(result.stdout) == sha256(data)


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


def test_sshd_offers_public_keys_only(server, setup, stranger_key):
    """Straight to sshd's socket, bypassing the proxy: nobody is offered a password."""
    path = server.status()["socket"]
    result = subprocess.run(
        ["ssh", "-F", "none", "-v", "-o", unix_proxy_command(path), "-o", "BatchMode=no",
         "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=jupyter-test",
         "-o", f"UserKnownHostsFile={setup.known_hosts}", "-o", "IdentitiesOnly=yes",
         "-i", str(stranger_key),
         "-o", "PreferredAuthentications=none,password,keyboard-interactive,publickey",
         "nobody-in-particular@127.0.0.1", "true"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == 255
    offered = {line.rsplit(":", 1)[1].strip() for line in stderr.splitlines()
               if "Authentications that can continue" in line}  # fmt: skip
    assert offered == {"publickey"}, stderr


def test_as_many_simultaneous_connections_as_may_log_in_all_get_a_banner(server):
    """max_unauthenticated (32 by default) connections at once each get their own
    sshd; test_faults.py shows that more wait for a free place."""
    from jupyter_sshd_proxy.settings import SSHDProxy

    path = server.status()["socket"]
    count = SSHDProxy.max_unauthenticated.default_value
    connections = [connect_unix(path) for _ in range(count)]
    try:
        banners = [sshd_banner(conn) for conn in connections]
    finally:
        for conn in connections:
            conn.close()
    assert all(banner.startswith(b"SSH-2.0-OpenSSH") for banner in banners), banners
