"""What an operator sees and steers, end to end on a real JupyterHub with
configurable-http-proxy, each user's server spawned as that user's own
system account:

* two users with ssh sessions: each server's /metrics and audit events show
  its own sessions only, with the Hub user who opened them;
* a server whose profile says sftp-only accepts sftp and refuses a shell;
* a server whose profile turns SSH off refuses the route, and no sshd runs.

The policy comes per user from the spawner's environment, as a Zero to
JupyterHub profile sets it (docs/zero-to-jupyterhub.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jupyter_sshd_proxy import audit, procfs

from ..support.helpers import UPGRADE_HEADERS, Account, SSHClient, pin_host_keys, wait_for
from ..support.hub import Hub, HubUserServer, home_is_ready

pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="the Hub spawns servers as other system accounts: needs root"
)

MiB = 1024 * 1024
POLICIES = {"ann": "all", "ben": "all", "cid": "sftp-only", "dot": "off"}
EVENTS_CONFIG = "import logging\nc.EventLogger.handlers = [logging.FileHandler({path!r})]\n"


@pytest.fixture(scope="module")
def accounts(run_dir):
    made = {}
    try:
        for who in POLICIES:
            made[who] = Account.create(f"{who}{os.getpid()}")
        yield made
    finally:
        for account in made.values():
            account.remove()


def events_file(account: Account):
    return account.home / "events.log"


@pytest.fixture(scope="module")
def hub(accounts, run_dir, client_key):
    workdir = run_dir / "hub-operators"
    workdir.mkdir(mode=0o700)
    for account in accounts.values():
        home_is_ready(account, client_key.with_suffix(".pub"))
        # Each server routes its audit events to a file (an operator would
        # use the image's config, or stdout: see docs/zero-to-jupyterhub.md).
        config_dir = account.home / ".jupyter"
        config_dir.mkdir()
        config = config_dir / "jupyter_server_config.py"
        config.write_text(EVENTS_CONFIG.format(path=str(events_file(account))))
        account.own(config_dir, config)
    policy_of = {account.name: POLICIES[who] for who, account in accounts.items()}
    extra = f"""
_POLICY_OF = {policy_of!r}
c.Spawner.environment = {{
    "JUPYTER_SSHD_PROXY_POLICY": lambda spawner: _POLICY_OF[spawner.user.name],
}}
"""
    hub = Hub(workdir, list(accounts.values()), extra_config=extra)
    try:
        hub.start()
        for account in accounts.values():
            hub.start_server(account.name)
        yield hub
    finally:
        hub.stop()


def client(hub, account: Account, client_key, run_dir) -> SSHClient:
    server = HubUserServer(hub, account, hub.token_for(account.name))
    code, body = server.request("GET", "/sshd-proxy/api/host-keys")
    assert code == 200, body
    known = run_dir / f"known_hosts-{account.name}"
    pin_host_keys(known, "jupyter-test", account.home / ".local/share/jupyter/sshd_proxy/host_keys")
    return SSHClient(server, client_key, known, proxy="jupyter-sshd-proxy")


def metrics(server: HubUserServer) -> dict[tuple[str, tuple], float]:
    """Our samples of the server's /metrics, read through the Hub's proxy."""
    code, body = server.request("GET", "/metrics")
    assert code == 200, body[:300]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name.startswith("jupyter_sshd_proxy_")
    }


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def events(account: Account, schema: str) -> list[dict]:
    path = events_file(account)
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        event for event in map(json.loads, lines) if event["__schema__"] == audit.SCHEMAS[schema]
    ]


def sshd_of(account: Account) -> list[int]:
    """Every sshd process that runs as the account."""
    return [
        pid
        for pid in procfs.pids()
        if procfs.owner(pid) == account.uid and (procfs.program(pid) or "").startswith("sshd")
    ]


def test_each_server_counts_and_tells_only_its_own_sessions(hub, accounts, client_key, run_dir):
    ann, ben = accounts["ann"], accounts["ben"]
    ann_ssh = client(hub, ann, client_key, run_dir)
    ben_ssh = client(hub, ben, client_key, run_dir)
    for _ in range(2):
        result = ann_ssh.ssh(f"head -c {MiB} /dev/zero")
        assert result.returncode == 0, result.stderr
        assert len(result.stdout) == MiB
    result = ben_ssh.ssh("cat > /dev/null", input=os.urandom(3 * MiB))
    assert result.returncode == 0, result.stderr

    def closed(account, count):
        found = [e for e in events(account, "connection") if e["action"] == "closed"]
        logged_in = [e for e in found if e["logged_in"]]
        return logged_in if len(logged_in) >= count else None

    ann_closed = wait_for(lambda: closed(ann, 2), 20, "ann's two sessions to be told")
    ben_closed = wait_for(lambda: closed(ben, 1), 20, "ben's session to be told")
    assert len(ann_closed) == 2
    assert len(ben_closed) == 1
    for account, told in ((ann, ann_closed), (ben, ben_closed)):
        for event in told:
            assert event["hub_user"] == account.name
            assert event["unix_user"] == account.name
            assert event["key_comment"] == "test"
            assert event["key_file"] == str(account.home / ".ssh" / "authorized_keys")
        opened = [e for e in events(account, "connection") if e["action"] == "opened"]
        assert {e["connection"] for e in opened} == {e["connection"] for e in told}
    assert all(e["bytes_to_client"] > MiB for e in ann_closed)
    assert 3 * MiB < ben_closed[0]["bytes_from_client"] < 3.5 * MiB
    assert ben_closed[0]["bytes_to_client"] < MiB

    ann_metrics = metrics(ann_ssh.server)
    ben_metrics = metrics(ben_ssh.server)
    logins = "jupyter_sshd_proxy_logins_total"
    assert value(ann_metrics, logins, result="accepted") == 2
    assert value(ben_metrics, logins, result="accepted") == 1
    moved = "jupyter_sshd_proxy_bytes_total"
    assert 2 * MiB < value(ann_metrics, moved, direction="to_client") < 2.5 * MiB
    assert value(ann_metrics, moved, direction="from_client") < MiB
    assert 3 * MiB < value(ben_metrics, moved, direction="from_client") < 3.5 * MiB
    assert value(ben_metrics, moved, direction="to_client") < MiB
    for samples in (ann_metrics, ben_metrics):
        assert value(samples, "jupyter_sshd_proxy_connections") == 0
    # No token of the Hub's, the users' or the servers' in any event.
    for account in (ann, ben):
        text = events_file(account).read_text()
        assert ann_ssh.server.token not in text
        assert ben_ssh.server.token not in text
        assert hub.token not in text


def test_a_file_transfer_only_server_takes_sftp_and_refuses_a_shell(
    hub, accounts, client_key, run_dir, tmp_path
):
    cid = client(hub, accounts["cid"], client_key, run_dir)
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(200_000))
    batch = tmp_path / "batch"
    batch.write_text(f"put {data} up.bin\nget up.bin {tmp_path}/back.bin\nrm up.bin\n")
    result = cid.run(["sftp", "-b", str(batch), *cid.options(), cid.host_alias])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "back.bin").read_bytes() == data.read_bytes()
    shell = subprocess.run(
        cid.ssh_argv(), input=b"echo hello\n", capture_output=True, timeout=60,
        env=cid.env, check=False,
    )  # fmt: skip
    assert shell.returncode == 1
    assert b"hello" not in shell.stdout
    assert b"This service allows sftp connections only." in shell.stdout + shell.stderr
    assert cid.server.status()["policy"] == "sftp-only"


def test_ssh_off_refuses_the_route_and_runs_no_sshd(hub, accounts):
    dot = accounts["dot"]
    server = HubUserServer(hub, dot, hub.token_for(dot.name))
    for _ in range(3):
        code, body = server.request("GET", "/sshd/", headers=UPGRADE_HEADERS)
        assert code == 403
        assert b"SSH is off on this server" in body
    status = server.status()
    assert status["policy"] == "off"
    assert status["running"] is False
    assert status["pid"] is None
    time.sleep(1)  # anything started by those requests would run by now
    assert sshd_of(dot) == []
    assert not [
        pid
        for pid in procfs.pids()
        if procfs.owner(pid) == dot.uid and "jupyter_sshd_proxy.supervisor" in procfs.cmdline(pid)
    ]
    refused = wait_for(
        lambda: [e for e in events(dot, "refused") if e["reason"] == "ssh_off"] or None,
        10,
        "the refusals to be told",
    )
    assert len(refused) == 3
    assert all(e["hub_user"] == dot.name for e in refused)
    name = "jupyter_sshd_proxy_refused_connections_total"
    assert value(metrics(server), name, reason="ssh_off") == 3
