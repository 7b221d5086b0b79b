"""The main path: real ssh, scp, sftp and rsync through a real Jupyter server.

Every test runs twice when the suite runs as root: with the server as this
user, and as a fresh unprivileged system account, as in a Hub container.
websocat is the ProxyCommand here, so nothing of ours runs on the client side.
"""

from __future__ import annotations

import os
import subprocess

from ..support.helpers import (
    VENV_BIN,
    connect_unix,
    sshd_banner,
    unix_proxy_command,
)
from ..support.main_path import (  # noqa: F401  (collected here: the main path)
    sha256,
    test_a_key_not_in_authorized_keys_is_refused,
    test_command_output_and_exit_status,
    test_interactive_shell_gets_a_terminal,
    test_port_forwarding_carries_bytes_both_ways,
    test_rsync_archive_of_a_small_tree,
    test_scp_both_ways,
    test_session_runs_as_the_server_user_in_its_home,
    test_sftp_batch,
    test_websocket_upgrade_without_a_valid_token_gets_403,
)


def test_session_sees_the_server_environment(setup, account, client_key):
    from ..support.helpers import SSHClient

    server = setup.server(JUPYTERHUB_EXAMPLE="from the hub", ODD_VALUE='a "quoted" \\ value')
    server.start()
    try:
        from ..support.servers import start_sshd

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


def test_binary_stdin_stdout_round_trip_16_mib(ssh):
    data = os.urandom(16 * 1024 * 1024)
    result = ssh.ssh("cat", input=data)  # a websocat stall costs WEBSOCAT_TRY_TIMEOUT
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == len(data)
    assert sha256(result.stdout) == sha256(data)


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
