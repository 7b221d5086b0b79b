"""End to end on a real JupyterHub: configurable-http-proxy in front, each user's
server spawned as that user's own system account, reached at /user/NAME/sshd/.

The main-path tests (tests/support/main_path.py, which e2e/test_ssh.py runs
too) run here again, unchanged, through the Hub: this module gives them a
`server` that is alice's server behind the Hub.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from datetime import datetime

import pytest

from jupyter_sshd_proxy import procfs

from ..support.helpers import (
    PROXIES,
    UPGRADE_HEADERS,
    VENV_BIN,
    Account,
    SSHClient,
    pin_host_keys,
    process_alive,
    unix_proxy_command,
    wait_for,
)
from ..support.hub import Hub, HubUserServer, home_is_ready
from ..support.main_path import (  # noqa: F401  (run again, through the Hub)
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

# Through the Hub, the main-path tests run with our proxy; these also with
# websocat, to show that it keeps working unchanged behind a real Hub.
WEBSOCAT_ONLY_FOR = {
    "test_command_output_and_exit_status",
    "test_scp_both_ways",
    "test_port_forwarding_carries_bytes_both_ways",
}

pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="the Hub spawns servers as other system accounts: needs root"
)


# Short activity timings, so the culling tests take seconds. The Hub takes
# activity from the servers' own reports only (last_activity_interval = 0):
# configurable-http-proxy counts every byte of a WebSocket, pings included,
# as activity (see Idle culling in docs/operators.md).
ACTIVITY_CONFIG = """
c.JupyterHub.last_activity_interval = 0
c.Spawner.environment = {
    "JUPYTERHUB_ACTIVITY_INTERVAL": "1",
    "JUPYTER_SSHD_PROXY_ACTIVITY_POLL_SECONDS": "0.5",
}
"""
DAVE_HOURS = 0.002  # 7.2 seconds


@pytest.fixture(scope="module")
def hub_accounts(run_dir):
    accounts = {}
    try:
        for who in ("alice", "bob", "carol", "dave"):
            accounts[who] = Account.create(f"{who}{os.getpid()}")
        yield accounts
    finally:
        for account in accounts.values():
            account.remove()


@pytest.fixture(scope="module")
def hub(hub_accounts, run_dir, client_key, stranger_key):
    workdir = run_dir / "hub"
    workdir.mkdir(mode=0o700)
    home_is_ready(hub_accounts["alice"], client_key.with_suffix(".pub"))
    home_is_ready(hub_accounts["bob"], stranger_key.with_suffix(".pub"))
    home_is_ready(hub_accounts["carol"], client_key.with_suffix(".pub"))
    home_is_ready(hub_accounts["dave"], client_key.with_suffix(".pub"))
    # dave chose the other culling policy, in his own Jupyter config.
    dave = hub_accounts["dave"]
    (dave.home / ".jupyter").mkdir()
    (dave.home / ".jupyter" / "jupyter_server_config.py").write_text(
        'c.SSHDProxy.activity = "connections"\n'
        f"c.SSHDProxy.activity_connection_hours = {DAVE_HOURS}\n"
    )
    dave.own(dave.home / ".jupyter", dave.home / ".jupyter" / "jupyter_server_config.py")
    hub = Hub(workdir, list(hub_accounts.values()), extra_config=ACTIVITY_CONFIG)
    try:
        hub.start()
        for account in hub_accounts.values():
            hub.start_server(account.name)
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def account(hub_accounts):
    return hub_accounts["alice"]


@pytest.fixture(scope="module")
def server(hub, account):
    return HubUserServer(hub, account, hub.token_for(account.name))


@pytest.fixture(scope="module")
def known_hosts(run_dir, server, account):
    server.status()  # the API makes the host keys if sshd has not run yet
    path = run_dir / "known_hosts-hub"
    code, _ = server.request("GET", "/sshd-proxy/api/host-keys")
    assert code == 200
    pin_host_keys(path, "jupyter-test", account.home / ".local/share/jupyter/sshd_proxy/host_keys")
    return path


@pytest.fixture(scope="module", params=PROXIES)
def ssh(request, server, client_key, known_hosts):
    return SSHClient(server, client_key, known_hosts, proxy=request.param)


def test_a_vs_code_like_session_runs_a_script_from_stdin(ssh):
    script = b'set -e\necho "$HOME"\nuname -s\nexit 0\n'
    result = ssh.ssh("-T", "bash", "-s", input=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [str(ssh.server.account.home), "Linux"]


def test_session_sees_the_single_user_environment(ssh, account):
    result = ssh.ssh('echo "$JUPYTERHUB_USER"; test -n "$JUPYTERHUB_API_TOKEN" && echo token')
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [account.name, "token"]


def test_another_users_token_is_refused(hub, server, hub_accounts):
    bobs_token = hub.token_for(hub_accounts["bob"].name)
    status, _ = server.request("GET", "/sshd/", token=bobs_token, headers=UPGRADE_HEADERS)
    assert status == 403


def test_a_token_without_access_to_the_server_is_refused(hub, server, account):
    token = hub.token_for(account.name, scopes=[f"read:users!user={account.name}"])
    status, _ = server.request("GET", "/sshd/", token=token, headers=UPGRADE_HEADERS)
    assert status == 403


def test_alice_cannot_reach_bobs_sshd_with_her_key(hub, hub_accounts, client_key, run_dir):
    bob = hub_accounts["bob"]
    bobs_server = HubUserServer(hub, bob, hub.token_for(bob.name))
    known = run_dir / "known_hosts-bob"
    assert bobs_server.request("GET", "/sshd-proxy/api/host-keys")[0] == 200
    pin_host_keys(known, "jupyter-test", bob.home / ".local/share/jupyter/sshd_proxy/host_keys")
    through_bobs_route = SSHClient(bobs_server, client_key, known, proxy="jupyter-sshd-proxy")
    result = through_bobs_route.ssh("true")
    assert result.returncode == 255
    assert b"Permission denied (publickey)." in result.stderr
    # Nor straight at the socket of bob's sshd, from this machine (as root).
    path = bobs_server.status()["socket"]
    direct = subprocess.run(
        ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "-i", str(client_key), "-o", f"UserKnownHostsFile={known}",
         "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=jupyter-test",
         "-o", unix_proxy_command(path), f"{bob.name}@127.0.0.1", "true"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert direct.returncode == 255
    assert b"Permission denied (publickey)." in direct.stderr


def test_config_ssh_against_the_hub_then_ssh_name(hub, server, account, tmp_path):
    home = tmp_path / "laptop"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    env = {k: v for k, v in os.environ.items() if "TOKEN" not in k}
    env["JUPYTER_SSHD_PROXY_TOKEN"] = server.token
    config = home / ".ssh" / "config"
    result = subprocess.run(
        [str(VENV_BIN / "jupyter-sshd-proxy"), "config-ssh", server.url + "/",
         "--ssh-config", str(config), "--no-connection-sharing"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    name = f"127.0.0.1-{hub.port}-{account.name}"
    assert f"Host {name}\n    User {account.name}\n" in config.read_text()
    env.pop("JUPYTER_SSHD_PROXY_TOKEN")
    ssh = subprocess.run(
        ["ssh", "-F", str(config), name, "id -un"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout == f"{account.name}\n"


# The server's life on the Hub: stopped, started on connect, stopped under a session.


@pytest.fixture
def carol(hub, hub_accounts, client_key, run_dir):
    """carol's server, running, with its host keys pinned; our own ProxyCommand."""
    account = hub_accounts["carol"]
    if not hub.user(account.name)["servers"]:
        hub.start_server(account.name)
    server = HubUserServer(hub, account, hub.token_for(account.name))
    assert server.request("GET", "/sshd-proxy/api/host-keys")[0] == 200
    known = run_dir / "known_hosts-carol"
    pin_host_keys(known, "jupyter-test", account.home / ".local/share/jupyter/sshd_proxy/host_keys")
    return SSHClient(server, client_key, known, proxy="jupyter-sshd-proxy")


def test_a_stopped_server_is_one_line(hub, carol):
    hub.stop_server(carol.server.account.name)
    started = time.monotonic()
    result = carol.ssh("true")
    assert time.monotonic() - started < 2
    assert result.returncode == 255
    ours = [line for line in result.stderr.decode().splitlines() if "jupyter-sshd-proxy" in line]
    assert ours == [
        f"jupyter-sshd-proxy: the Jupyter server at ws://127.0.0.1:{hub.port}/user/"
        f"{carol.server.account.name}/sshd/ is not running (302); start it from the Hub, or "
        "connect with `jupyter-sshd-proxy proxy --start`"
    ]


def test_start_on_connect(hub, carol):
    name = carol.server.account.name
    hub.stop_server(name)
    starting = dataclasses.replace(carol, proxy_args="--start")
    result = subprocess.run(
        starting.ssh_argv("id -un"), stdin=subprocess.DEVNULL, capture_output=True,
        timeout=120, env=starting.env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{name}\n".encode()
    stderr = result.stderr.decode()
    assert f"jupyter-sshd-proxy: starting {name}'s server on the Hub ...\n" in stderr
    assert "jupyter-sshd-proxy: [100%] " in stderr
    assert hub.user(name)["servers"][""]["ready"]


def test_stopping_the_server_ends_sshd_and_every_session(hub, carol):
    name = carol.server.account.name
    sshd_pid = carol.server.status()["pid"]
    session = carol.open_session("sleep 600")
    try:
        assert _processes_of(carol.server.account.uid)
        hub.stop_server(name)
        wait_for(
            lambda: not _processes_of(carol.server.account.uid), 15, "carol's processes to end"
        )
        assert not process_alive(sshd_pid)
    finally:
        carol.end(session)


def _processes_of(uid: int) -> list[str]:
    return [
        procfs.cmdline(pid)
        for pid in procfs.pids()
        if procfs.owner(pid) == uid and procfs.alive(pid)
    ]


# Idle culling: what the Hub's last_activity (which jupyterhub-idle-culler reads) sees.


def _last_activity(hub, name: str) -> datetime:
    stamp = hub.user(name)["servers"][""]["last_activity"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _idle_session(client: SSHClient, ping_interval: float) -> subprocess.Popen:
    """An open ssh session that moves no bytes, while our proxy pings the WebSocket."""
    pinging = dataclasses.replace(client, proxy_args=f"--ping-interval {ping_interval}")
    return pinging.open_session("sleep 600", stdin=subprocess.PIPE)


def test_traffic_policy_counts_ssh_use_but_not_keepalive_pings(hub, carol):
    name = carol.server.account.name
    session = _idle_session(carol, ping_interval=0.3)
    try:
        time.sleep(3)  # the login itself was activity; let it be reported
        before = _last_activity(hub, name)
        time.sleep(6)  # 20 pings, 6 activity reports, 12 polls
        assert _last_activity(hub, name) == before, "pings counted as activity"
        busy = carol.ssh("for i in 1 2 3; do echo $i; sleep 1; done")
        assert busy.returncode == 0
        wait_for(lambda: _last_activity(hub, name) > before, 10, "SSH use to count", interval=0.5)
    finally:
        carol.end(session)


def test_connections_policy_counts_an_open_session_for_a_while(hub, dave_client):
    name = dave_client.server.account.name
    opened = time.monotonic()
    session = _idle_session(dave_client, ping_interval=0.3)
    try:
        first = _last_activity(hub, name)
        # While the connection is young, it is activity, though it moves no bytes.
        wait_for(
            lambda: _last_activity(hub, name) > first, 5, "the connection to count", interval=0.5
        )
        time.sleep(max(0.0, opened + DAVE_HOURS * 3600 + 3 - time.monotonic()))
        settled = _last_activity(hub, name)
        time.sleep(4)
        assert _last_activity(hub, name) == settled, "an old idle connection still counts"
        assert session.poll() is None  # the session itself is still open
    finally:
        dave_client.end(session)


@pytest.fixture
def dave_client(hub, hub_accounts, client_key, run_dir):
    account = hub_accounts["dave"]
    server = HubUserServer(hub, account, hub.token_for(account.name))
    assert server.request("GET", "/sshd-proxy/api/host-keys")[0] == 200
    known = run_dir / "known_hosts-dave"
    pin_host_keys(known, "jupyter-test", account.home / ".local/share/jupyter/sshd_proxy/host_keys")
    return SSHClient(server, client_key, known, proxy="jupyter-sshd-proxy")
