"""Every server of a Hub from one config-ssh, end to end on a real JupyterHub with
configurable-http-proxy: `ssh NAME`, `ssh NAME.SERVER`, servers made afterwards,
their host keys pinned on first use, a token that can do little and expires.

One user (the Hub spawns each server as that user's system account) with a
default server and a named one, `gpu`, both running when config-ssh runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from ..support.helpers import Account, wait_for
from ..support.hub import Hub
from ..support.laptop import env_with_token, laptop_home, run_cli

pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="the Hub spawns servers as other system accounts: needs root"
)

# The single-user servers ask the Hub about a token at most once a second
# (HubOAuth caches the answer, 5 minutes by default): an expired token is
# then refused by the servers too within the test's patience.
HUB_CONFIG = """
c.JupyterHub.allow_named_servers = True
c.Spawner.args = ["--HubOAuth.cache_max_age=1"]
"""
NAME = "myhub"


@pytest.fixture(scope="module")
def user(run_dir):
    account = Account.create(f"hubs{os.getpid()}")
    try:
        yield account
    finally:
        account.remove()


@pytest.fixture(scope="module")
def hub(user, run_dir):
    workdir = run_dir / "hub-servers"
    workdir.mkdir(mode=0o700)
    hub = Hub(workdir, [user], extra_config=HUB_CONFIG)
    try:
        hub.start()
        hub.start_server(user.name)
        start_named(hub, user.name, "gpu")
        yield hub
    finally:
        hub.stop()


def start_named(hub: Hub, user: str, server: str) -> None:
    status, body = hub.api("POST", f"/hub/api/users/{user}/servers/{server}")
    assert status in (201, 202), (status, body)
    wait_for(lambda: state(hub, user, server) == "ready", 90, f"{user}/{server} to be ready", 0.3)


def state(hub: Hub, user: str, server: str) -> str | None:
    status, body = hub.api("GET", f"/hub/api/users/{user}?include_stopped_servers=1")
    assert status == 200, body
    model = body["servers"].get(server)
    if model is None:
        return None
    return "ready" if model["ready"] else ("pending" if model["pending"] else "stopped")


@pytest.fixture(scope="module")
def pasted(hub, user):
    """The token a user pastes: made on the Hub's token page, it can do all the user can."""
    return hub.token_for(user.name)


@pytest.fixture(scope="module")
def laptop(hub, user, pasted):
    """A laptop that ran `config-ssh HUB_URL --name myhub` once."""
    with laptop_home() as home:
        result = config_ssh(hub, home, pasted)
        assert result.returncode == 0, result.stderr
        yield home


def config_ssh(hub: Hub, home, token: str | None, *more: str, name: str = NAME):
    return run_cli(
        "config-ssh", f"{hub.url}/", "--name", name, "--ssh-config", str(home / ".ssh/config"),
        "--no-connection-sharing", *more, token=token, timeout=120,
    )  # fmt: skip


def ssh(home, host: str, *command: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """ssh as the user types it, with the config config-ssh wrote (and no token around)."""
    return subprocess.run(
        ["ssh", "-F", str(home / ".ssh/config"), "-o", "BatchMode=yes", host, *command],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        env=env_with_token(None),
    )  # fmt: skip


def ours(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("jupyter-sshd-proxy: ")]


def test_ssh_name_and_ssh_name_server_reach_each_server(laptop, user):
    default = ssh(laptop, NAME, 'echo "$(id -un) [$JUPYTERHUB_SERVER_NAME]"')
    assert default.returncode == 0, default.stderr
    assert default.stdout == f"{user.name} []\n"
    gpu = ssh(laptop, f"{NAME}.gpu", 'echo "$(id -un) [$JUPYTERHUB_SERVER_NAME]"')
    assert gpu.returncode == 0, gpu.stderr
    assert gpu.stdout == f"{user.name} [gpu]\n"


def test_scp_to_a_named_server(laptop, user):
    source = laptop / "hello.txt"
    source.write_bytes(os.urandom(100_000))
    sent = subprocess.run(
        ["scp", "-F", str(laptop / ".ssh/config"), "-o", "BatchMode=yes", str(source),
         f"{NAME}.gpu:hello.txt"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
        env=env_with_token(None),
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert (user.home / "hello.txt").read_bytes() == source.read_bytes()


def test_each_existing_server_has_a_host_entry_of_its_own(laptop):
    """What VS Code's Remote Explorer and shell completion list: Host names
    without a wildcard."""
    config = (laptop / ".ssh/config").read_text()
    listed = {
        word
        for line in config.splitlines()
        if line.startswith("Host ")
        for word in line.split()[1:]
        if not any(char in word for char in '*?!"')
    }
    assert {NAME, f"{NAME}.gpu"} <= listed
    assert f"Host {NAME}.gpu\n" in config
    assert "StrictHostKeyChecking no" not in config
    assert "accept-new" not in config


def test_the_running_servers_are_pinned_by_config_ssh(laptop, user):
    known = (laptop / ".ssh/jupyter-sshd-proxy/known_hosts").read_text().splitlines()
    host_keys = user.home / ".local/share/jupyter/sshd_proxy/host_keys"
    served = {tuple(p.read_text().split()[:2]) for p in host_keys.glob("ssh_host_*_key.pub")}
    for alias in (NAME, f"{NAME}.gpu"):
        assert {tuple(line.split()[1:]) for line in known if line.split()[0] == alias} == served


def test_a_server_made_afterwards_works_with_no_further_step(hub, laptop, user):
    config_before = (laptop / ".ssh/config").read_bytes()
    start_named(hub, user.name, "later")
    result = ssh(laptop, f"{NAME}.later", 'echo "[$JUPYTERHUB_SERVER_NAME]"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[later]\n"
    assert ours(result.stderr) == [
        f"jupyter-sshd-proxy: pinned the host keys of {NAME}.later in "
        f"{laptop}/.ssh/jupyter-sshd-proxy/known_hosts"
    ]
    known = (laptop / ".ssh/jupyter-sshd-proxy/known_hosts").read_text()
    assert re.search(rf"(?m)^{NAME}\.later ssh-ed25519 ", known)
    assert (laptop / ".ssh/config").read_bytes() == config_before
    again = ssh(laptop, f"{NAME}.later", "true")
    assert again.returncode == 0, again.stderr
    assert ours(again.stderr) == []  # the pin is used; nothing fetched again


def test_a_changed_host_key_of_a_server_made_afterwards_is_refused(hub, laptop, user):
    """Pinned on first use, then never fetched again: the server's API now
    serves the new key, and ssh still refuses it."""
    start_named(hub, user.name, "changing")
    first = ssh(laptop, f"{NAME}.changing", "true")
    assert first.returncode == 0, first.stderr
    host_keys = user.home / ".local/share/jupyter/sshd_proxy/host_keys"
    saved = host_keys.with_name("host_keys.saved")
    host_keys.rename(saved)  # (a rename keeps the owner: the user's, not ours)
    try:
        host_keys.mkdir(mode=0o700)
        user.own(host_keys)
        for old in saved.glob("ssh_host_*_key"):
            new = host_keys / old.name
            subprocess.run(
                ["ssh-keygen", "-q", "-t", old.name.split("_")[2], "-N", "", "-f", str(new)],
                check=True,
            )
            user.own(new, new.with_suffix(".pub"))
        refused = ssh(laptop, f"{NAME}.changing", "true")
        assert refused.returncode == 255
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
        assert "Host key verification failed." in refused.stderr
    finally:
        shutil.rmtree(host_keys, ignore_errors=True)
        saved.rename(host_keys)


def test_the_stored_token_can_do_less_than_the_pasted_one_and_expires(hub, laptop, user, pasted):
    stored = (laptop / ".ssh/jupyter-sshd-proxy" / f"{NAME}.token").read_text().strip()
    assert stored != pasted
    status, mine = hub.api("GET", "/hub/api/user", token=stored)
    assert status == 200, mine
    status, theirs = hub.api("GET", "/hub/api/user", token=pasted)
    assert status == 200, theirs
    narrow, wide = set(mine["scopes"]), set(theirs["scopes"])
    assert narrow < wide
    u = user.name
    assert {f"access:servers!user={u}", f"read:servers!user={u}"} <= narrow
    assert not narrow & {f"servers!user={u}", f"tokens!user={u}", f"delete:servers!user={u}"}
    # On the Hub's token page: expiring in 30 days, named for this machine.
    status, listed = hub.api("GET", f"/hub/api/users/{u}/tokens")
    assert status == 200, listed
    (ours_,) = [t for t in listed["api_tokens"] if t["id"] == mine["token_id"]]
    assert ours_["note"].startswith("jupyter-sshd-proxy on ")
    expires = time.mktime(time.strptime(ours_["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(expires - time.mktime(time.gmtime()) - 30 * 86400) < 600
    # The pasted token is nowhere on the laptop.
    for path in laptop.rglob("*"):
        if path.is_file():
            assert pasted.encode() not in path.read_bytes(), path


def test_servers_lists_every_server(hub, laptop, user):
    status, body = hub.api("PUT", f"/hub/api/users/{user.name}/servers/idle", {})
    assert status in (200, 201), body
    result = run_cli(
        "servers", f"{hub.url}/", "--json", "--ssh-config", str(laptop / ".ssh/config"),
        token=None,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {row["server"]: row for row in json.loads(result.stdout)}
    assert rows[""]["ssh"] == NAME
    assert rows[""]["state"] == "running"
    assert rows[""]["ssh_ready"] is True
    assert rows["gpu"]["ssh"] == f"{NAME}.gpu"
    assert rows["gpu"]["ssh_ready"] is True
    assert rows["idle"] == {
        "server": "idle", "ssh": f"{NAME}.idle", "state": "stopped",
        "last_activity": rows["idle"]["last_activity"], "ssh_ready": None, "problem": None,
    }  # fmt: skip
    config = str(laptop / ".ssh/config")
    table = run_cli("servers", f"{hub.url}/", "--ssh-config", config, token=None)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SERVER", "SSH", "STATE", "LAST", "ACTIVITY", "SSH", "READY"]
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"
    assert re.match(rf"\(default\) +{NAME} +running +{when} +yes$", lines[1])
    assert any(re.match(rf"idle +{NAME}\.idle +stopped +.* -$", line) for line in lines)


def test_a_stopped_server_is_one_line(hub, laptop, user):
    status, body = hub.api("PUT", f"/hub/api/users/{user.name}/servers/idle", {})
    assert status in (200, 201, 409), body
    result = ssh(laptop, f"{NAME}.idle", "true")
    assert result.returncode == 255
    assert ours(result.stderr) == [
        f"jupyter-sshd-proxy: {NAME}.idle: {user.name}'s server idle is stopped; start it from "
        f"{hub.url}/hub/home, or run config-ssh again with --start to have ssh start it"
    ]
    assert state(hub, user.name, "idle") == "stopped"


def test_a_server_that_does_not_exist_is_never_made(hub, laptop, user):
    result = ssh(laptop, f"{NAME}.nosuch", "true")
    assert result.returncode == 255
    assert ours(result.stderr) == [
        f"jupyter-sshd-proxy: {NAME}.nosuch: {user.name} has no server named 'nosuch' on the "
        f"Hub (connecting never makes one); see `jupyter-sshd-proxy servers {hub.url}/`"
    ]
    assert state(hub, user.name, "nosuch") is None


def test_with_start_a_stopped_server_starts_and_a_missing_one_is_still_not_made(hub, user, pasted):
    with laptop_home() as home:
        result = config_ssh(hub, home, pasted, "--start", name="starting")
        assert result.returncode == 0, result.stderr
        stored = (home / ".ssh/jupyter-sshd-proxy/starting.token").read_text().strip()
        scopes = set(hub.api("GET", "/hub/api/user", token=stored)[1]["scopes"])
        assert f"start:servers!user={user.name}" in scopes  # JupyterHub 6: start, not stop
        assert not scopes & {f"servers!user={user.name}", f"delete:servers!user={user.name}"}
        status, body = hub.api("PUT", f"/hub/api/users/{user.name}/servers/cold", {})
        assert status in (200, 201), body
        started = ssh(home, "starting.cold", 'echo "[$JUPYTERHUB_SERVER_NAME]"', timeout=150)
        assert started.returncode == 0, started.stderr
        assert started.stdout == "[cold]\n"
        assert f"jupyter-sshd-proxy: starting {user.name}'s server cold on the Hub ..." in (
            started.stderr
        )
        assert "jupyter-sshd-proxy: [100%] " in started.stderr
        missing = ssh(home, "starting.nosuch2", "true")
        assert missing.returncode == 255
        assert "has no server named 'nosuch2'" in missing.stderr
        assert state(hub, user.name, "nosuch2") is None


def test_an_expired_token_is_one_line_with_the_command_that_renews_it(hub, user, pasted):
    with laptop_home() as home:
        result = config_ssh(hub, home, pasted, "--token-expires-in", "8s", name="brief")
        assert result.returncode == 0, result.stderr
        info = json.loads((home / ".ssh/jupyter-sshd-proxy/brief.hub.json").read_text())
        when = f"{info['expires_at'][:10]} {info['expires_at'][11:16]} UTC"
        wait_for(
            lambda: hub.api("GET", "/hub/api/user", token=info_token(home))[0] == 403,
            30,
            "the token to expire",
            interval=0.5,
        )
        time.sleep(2)  # HubOAuth's cache of the token on the servers (1 s here)
        for host in ("brief", "brief.gpu", "brief.idle"):
            refused = ssh(home, host, "true")
            assert refused.returncode == 255, refused.stderr
            assert ours(refused.stderr) == [
                f"jupyter-sshd-proxy: the token for brief expired on {when}; renew it with: "
                f"jupyter-sshd-proxy config-ssh {hub.url}/ --name brief"
            ], host


def info_token(home) -> str:
    return (home / ".ssh/jupyter-sshd-proxy/brief.token").read_text().strip()
