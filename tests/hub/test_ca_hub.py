"""SSH certificates from the Hub, end to end on a real JupyterHub with
configurable-http-proxy and the certificate authority started by the Hub as
an operator starts it (c.JupyterHub.services, docs/certificates.md).

Three Hub users whose servers all run as ONE unix account (as in containers,
where everyone is jovyan), with an empty authorized_keys: ann and ben trust
the authority; cid's server is told a keys URL where nothing answers, and
fails closed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from ..support.helpers import (
    VENV_BIN,
    Account,
    SSHClient,
    free_port,
    http_request,
    make_key,
    pin_host_keys,
    wait_for,
)
from ..support.hub import Hub
from ..support.laptop import env_with_token, laptop_home, run_cli

pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="the Hub spawns servers as another system account: needs root"
)

CA = "ssh-ca"
PID = os.getpid()
ANN, BEN, CID = f"ann{PID}", f"ben{PID}", f"cid{PID}"


@pytest.fixture(scope="module")
def unix(run_dir):
    account = Account.create(f"jov{PID}")
    try:
        ssh_dir = account.home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text("")  # certificates only
        (ssh_dir / "authorized_keys").chmod(0o600)
        account.own(ssh_dir, ssh_dir / "authorized_keys")
        # The servers' audit events go to a file (as in test_hub_operators.py).
        config_dir = account.home / ".jupyter"
        config_dir.mkdir()
        config = config_dir / "jupyter_server_config.py"
        events = account.home / "events.log"
        config.write_text(
            f"import logging\nc.EventLogger.handlers = [logging.FileHandler({str(events)!r})]\n"
        )
        account.own(config_dir, config)
        yield account
    finally:
        account.remove()


def hub_config(unix: Account, ca_port: int, state_dir: Path, events: Path) -> str:
    command = [
        str(VENV_BIN / "python"), "-m", "jupyter_sshd_proxy.ca", f"--state-dir={state_dir}",
        f"--events-file={events}", "--validity=1h", "--max-validity=2h",
    ]  # fmt: skip
    keys_url = f"http://127.0.0.1:{ca_port}/services/{CA}/keys"
    return f"""
import pwd
from jupyterhub.spawner import LocalProcessSpawner

class OneAccountSpawner(LocalProcessSpawner):
    # Every Hub user's server runs as the same unix account.
    def make_preexec_fn(self, name):
        return super().make_preexec_fn({unix.name!r})

    def user_env(self, env):
        entry = pwd.getpwnam({unix.name!r})
        env.update(USER=entry.pw_name, HOME=entry.pw_dir, SHELL=entry.pw_shell)
        return env

c.JupyterHub.spawner_class = OneAccountSpawner
c.JupyterHub.allow_named_servers = True
c.JupyterHub.services.append(
    {{"name": {CA!r}, "url": "http://127.0.0.1:{ca_port}", "command": {command!r}}}
)
c.JupyterHub.load_roles.append(
    {{"name": "user", "scopes": ["self", "access:services!service={CA}"]}}
)
_KEYS = {{{CID!r}: "http://127.0.0.1:{free_port()}/services/{CA}/keys"}}
c.Spawner.environment = {{
    "JUPYTER_SSHD_PROXY_TRUSTED_USER_CA_KEYS": lambda s: _KEYS.get(s.user.name, {keys_url!r}),
}}
"""


@pytest.fixture(scope="module")
def hub(unix, run_dir):
    workdir = run_dir / "hub-ca"
    workdir.mkdir(mode=0o700)
    users = [SimpleNamespace(name=name) for name in (ANN, BEN, CID)]
    config = hub_config(unix, free_port(), workdir / "ca-state", workdir / "ca-events.log")
    hub = Hub(workdir, users, extra_config=config)
    try:
        hub.start()
        for name in (ANN, BEN, CID):
            hub.start_server(name)
        yield hub
    finally:
        hub.stop()


@dataclass
class Server:
    """One Hub user's server, reached through the Hub's proxy, running as `account`."""

    hub: Hub
    hub_user: str
    account: Account
    token: str

    @property
    def url(self) -> str:
        return f"{self.hub.url}/user/{self.hub_user}"

    def status(self) -> dict:
        path = f"/user/{self.hub_user}/sshd-proxy/api/status"
        code, body = http_request(self.hub.port, "GET", path, self.token)
        assert code == 200, body
        return json.loads(body)


def sign(hub: Hub, token: str | None, body: object) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    code, answer = http_request(hub.port, "POST", f"/services/{CA}/sign", token, headers, data)
    return code, json.loads(answer)


@pytest.fixture(scope="module")
def laptop(run_dir):
    directory = run_dir / "ca-laptop"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture(scope="module")
def tokens(hub):
    return {name: hub.token_for(name) for name in (ANN, BEN, CID)}


def certify(hub, token: str, key: Path, **more) -> Path:
    code, answer = sign(hub, token, {"public_key": key.with_suffix(".pub").read_text(), **more})
    assert code == 200, answer
    cert = Path(f"{key}-cert.pub")
    cert.write_text(answer["certificate"] + "\n")
    return cert


def client(hub, hub_user, unix, tokens, key, laptop) -> SSHClient:
    server = Server(hub, hub_user, unix, tokens[hub_user])
    path = f"/user/{hub_user}/sshd-proxy/api/host-keys"  # made on first use
    code, body = http_request(hub.port, "GET", path, server.token)
    assert code == 200, body
    known = laptop / f"known_hosts-{hub_user}"
    pin_host_keys(known, "jupyter-test", unix.home / ".local/share/jupyter/sshd_proxy/host_keys")
    return SSHClient(server, key, known, proxy="jupyter-sshd-proxy")


@pytest.fixture(scope="module")
def ann_key(laptop):
    (laptop / "ann").mkdir(mode=0o700)
    return make_key(laptop / "ann" / "id_ed25519")


def test_the_authority_refuses_without_a_token_and_for_another_user(hub, tokens, ann_key):
    line = ann_key.with_suffix(".pub").read_text()
    assert sign(hub, None, {"public_key": line}) == (
        401,
        {"message": "no token: send your Hub token in the Authorization header (token <token>)"},
    )
    assert sign(hub, "0" * 32, {"public_key": line})[0] in (401, 403)
    for field, value in (("user", ANN), ("principal", f"hub:{ANN}")):
        code, answer = sign(hub, tokens[BEN], {"public_key": line, field: value})
        assert code == 403
        assert answer == {
            "message": f"this token is {BEN}'s: it can only have a certificate for "
            + (BEN if field == "user" else f"hub:{BEN}")
        }
    code, answer = sign(hub, tokens[ANN], {"public_key": "ssh-rsa AAAA nope"})
    assert code == 400
    assert answer["message"].startswith("public_key refused: ")
    code, answer = sign(hub, tokens[ANN], {"public_key": line, "validity_seconds": 7201})
    assert code == 400
    assert answer == {
        "message": "validity_seconds=7201 is more than this authority gives (7200 seconds); "
        "ask for 7200 or less"
    }
    code, answer = sign(hub, tokens[ANN], b"ssh-ed25519 AAAA")
    assert code == 400
    # A token that cannot reach the service (no access:services) is refused.
    narrow = hub.token_for(ANN, scopes=[f"access:servers!user={ANN}"])
    code, answer = sign(hub, narrow, {"public_key": line})
    assert code == 403
    assert answer == {"message": f"the token lacks the scope access:services!service={CA}"}


def test_certificate_only_login_for_ssh_scp_sftp_and_rsync(
    hub, unix, tokens, ann_key, laptop, tmp_path
):
    issued = certify(hub, tokens[ANN], ann_key)
    ann = client(hub, ANN, unix, tokens, ann_key, laptop)
    result = ann.ssh("echo $(id -un) $JUPYTERHUB_USER")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{unix.name} {ANN}\n".encode()
    # The server's connection event names the certificate that logged in.
    serial = int(
        subprocess.run(
            ["ssh-keygen", "-L", "-f", str(issued)], capture_output=True, text=True, check=True
        )
        .stdout.split("Serial: ")[1]
        .split()[0]
    )

    def opened():
        path = unix.home / "events.log"
        lines = path.read_text().splitlines() if path.exists() else []
        found = [json.loads(line) for line in lines]
        return [e for e in found if e.get("action") == "opened" and e["hub_user"] == ANN] or None

    event = wait_for(opened, 20, "ann's connection event")[0]
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{ann_key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert event["key_type"] == "ED25519-CERT"
    assert event["key_fingerprint"] == fingerprint
    assert event["certificate_id"] == f"{ANN} {fingerprint}"
    assert event["certificate_serial"] == serial
    assert event["unix_user"] == unix.name
    status = ann.server.status()["certificates"]
    assert status["trusted"] is True
    assert status["principal"] == f"hub:{ANN}"
    assert status["error"] is None

    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(300_000))
    scp = ann.run(["scp", *ann.options(), str(data), ann.remote("scp.bin")])
    assert scp.returncode == 0, scp.stderr
    assert (unix.home / "scp.bin").read_bytes() == data.read_bytes()
    batch = tmp_path / "batch"
    batch.write_text(f"get scp.bin {tmp_path}/sftp.bin\nrm scp.bin\n")
    sftp = ann.run(["sftp", "-b", str(batch), *ann.options(), ann.host_alias])
    assert sftp.returncode == 0, sftp.stderr
    assert (tmp_path / "sftp.bin").read_bytes() == data.read_bytes()
    rsync = ann.run(
        ["rsync", "-a", "-e", ann.rsync_shell(), str(data), ann.remote("rsync.bin")]
    )  # fmt: skip
    assert rsync.returncode == 0, rsync.stderr
    assert (unix.home / "rsync.bin").read_bytes() == data.read_bytes()

    # One audit event per certificate, with no token in it.
    events = [json.loads(line) for line in (hub.workdir / "ca-events.log").read_text().splitlines()]
    mine = [event for event in events if event["hub_user"] == ANN]
    assert mine
    assert mine[-1]["principal"] == f"hub:{ANN}"
    assert mine[-1]["__schema__"] == "https://schema.jupyter.org/jupyter_sshd_proxy/certificate/v1"
    log = hub.log()
    assert f"ssh-ca: certificate {mine[-1]['serial']} for {ANN}" in log
    for text in (log, (hub.workdir / "ca-events.log").read_text()):
        for token in tokens.values():
            assert token not in text


def test_a_certificate_does_not_open_another_hub_users_server(hub, unix, tokens, ann_key, laptop):
    certify(hub, tokens[ANN], ann_key)
    ben = client(hub, BEN, unix, tokens, ann_key, laptop)
    result = ben.ssh("true")
    assert result.returncode == 255
    assert b"Permission denied (publickey)" in result.stderr
    assert ben.server.status()["certificates"]["principal"] == f"hub:{BEN}"


def test_an_expired_certificate_is_refused(hub, unix, tokens, laptop):
    (laptop / "short").mkdir(mode=0o700)
    key = make_key(laptop / "short" / "id_ed25519")
    certify(hub, tokens[ANN], key, validity_seconds=1)
    ann = client(hub, ANN, unix, tokens, key, laptop)
    time.sleep(2)
    result = ann.ssh("true")
    assert result.returncode == 255
    assert b"Permission denied (publickey)" in result.stderr


def test_a_certificate_from_another_authority_is_refused(hub, unix, tokens, laptop):
    (laptop / "forged").mkdir(mode=0o700)
    key = make_key(laptop / "forged" / "id_ed25519")
    other_ca = make_key(laptop / "forged" / "ca")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(other_ca), "-I", "forged", "-n", f"hub:{ANN},{unix.name}",
         "-V", "-5m:+1h", str(key) + ".pub"],
        check=True,
    )  # fmt: skip
    ann = client(hub, ANN, unix, tokens, key, laptop)
    result = ann.ssh("true")
    assert result.returncode == 255
    assert b"Permission denied (publickey)" in result.stderr


def test_a_server_that_cannot_fetch_the_keys_trusts_no_certificate(hub, unix, tokens, laptop):
    (laptop / "cid").mkdir(mode=0o700)
    key = make_key(laptop / "cid" / "id_ed25519")
    certify(hub, tokens[CID], key)
    cid = client(hub, CID, unix, tokens, key, laptop)
    result = cid.ssh("true")
    assert result.returncode == 255
    assert b"Permission denied (publickey)" in result.stderr
    status = cid.server.status()["certificates"]
    assert status["trusted"] is False
    assert status["error"].startswith(
        "SSH certificates are not trusted: cannot fetch the certificate authority's keys from "
    )
    assert status["error"].endswith("; authorized_keys still work")


# The laptop: config-ssh against a Hub with the authority uploads no key, and
# the certificate is renewed by the Match line before ssh authenticates.

NAME = "cahub"


def laptop_ssh(home: Path, *command: str, host: str = NAME) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", str(home / ".ssh/config"), "-o", "BatchMode=yes", host, *command],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
        env=env_with_token(None),
    )  # fmt: skip


def serial_of(path: Path) -> int:
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return int(listing.split("Serial: ")[1].split()[0])


def test_config_ssh_uploads_no_key_and_a_renewal_at_connect_time_is_used(hub, unix, tokens):
    with laptop_home() as home:
        result = run_cli(
            "config-ssh", f"{hub.url}/", "--name", NAME, "--ssh-config", str(home / ".ssh/config"),
            "--no-connection-sharing", token=tokens[ANN], timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert (unix.home / ".ssh/authorized_keys").read_text() == ""  # no key uploaded
        own = home / ".ssh/jupyter-sshd-proxy"
        cert = own / f"{NAME}-cert.pub"
        config = (home / ".ssh/config").read_text()
        match = [line for line in config.splitlines() if line.startswith("Match ")]
        assert len(match) == 1
        assert match[0].startswith(f'Match host "{NAME},{NAME}.*" exec "')
        assert " -P -m jupyter_sshd_proxy_client certificate --token-file " in match[0]
        assert f"    CertificateFile {cert}" in config
        assert tokens[ANN] not in config
        first = serial_of(cert)  # config-ssh got one already

        done = laptop_ssh(home, "echo $JUPYTERHUB_USER")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{ANN}\n"
        assert serial_of(cert) == first  # still fresh: kept, no request

        # A certificate about to expire is replaced before ssh reads it, and
        # that connection logs in with the new one: the old one has expired
        # by then, and authorized_keys is empty.
        identity = home / ".ssh/id_ed25519"
        short = certify(hub, tokens[ANN], identity, validity_seconds=2)
        short.replace(cert)
        expiring = serial_of(cert)
        time.sleep(3)
        done = laptop_ssh(home, "echo $JUPYTERHUB_USER")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{ANN}\n"
        renewed = serial_of(cert)
        assert renewed > expiring > first
        events = (hub.workdir / "ca-events.log").read_text()
        assert f'"serial": {renewed}' in events

        # A named server started after config-ssh ran takes the laptop at once.
        status, body = hub.api("POST", f"/hub/api/users/{ANN}/servers/later")
        assert status in (201, 202), body
        wait_for(
            lambda: (hub.user(ANN)["servers"].get("later") or {}).get("ready"), 90, "later"
        )  # fmt: skip
        done = laptop_ssh(home, "echo $JUPYTERHUB_SERVER_NAME", host=f"{NAME}.later")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "later\n"
        assert (unix.home / ".ssh/authorized_keys").read_text() == ""

        # When the certificate cannot be renewed (here: the token is gone,
        # which the ProxyCommand needs too), ssh fails with one line saying why.
        short = certify(hub, tokens[ANN], identity, validity_seconds=2)
        short.replace(cert)
        (own / f"{NAME}.token").write_text("")
        time.sleep(3)
        failed = laptop_ssh(home, "true")
        assert failed.returncode == 255
        assert (
            f"jupyter-sshd-proxy: the token file {own / (NAME + '.token')} is empty; "
            "run config-ssh again"
        ) in failed.stderr


def test_a_run_whose_certificate_is_refused_leaves_the_last_setup_working(hub, unix, tokens):
    """config-ssh again, with a key the authority refuses: it fails with one
    line, and ~/.ssh/config, known_hosts, the token and its info file are
    as they were, byte for byte; ssh still logs in as before."""
    with laptop_home() as home:
        config = home / ".ssh/config"
        args = ["config-ssh", f"{hub.url}/", "--name", NAME, "--ssh-config", str(config),
                "--no-connection-sharing"]  # fmt: skip
        assert run_cli(*args, token=tokens[ANN], timeout=120).returncode == 0
        own = home / ".ssh/jupyter-sshd-proxy"
        kept = [config, own / "known_hosts", own / f"{NAME}.token", own / f"{NAME}.hub.json"]
        kept = [path for path in kept if path.exists()]
        assert len(kept) == 4, sorted(own.iterdir())
        before = {path: path.read_bytes() for path in kept}

        weak = home / ".ssh/id_rsa"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(weak)], check=True
        )
        failed = run_cli(*args, "--identity", str(weak), token=tokens[ANN], timeout=120)
        assert failed.returncode == 1
        assert "too weak to certify" in failed.stderr.splitlines()[-1]
        assert {path: path.read_bytes() for path in kept} == before
        done = laptop_ssh(home, "echo $JUPYTERHUB_USER")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{ANN}\n"


def test_a_dry_run_asks_the_authority_for_nothing_and_writes_nothing(hub, unix, tokens):
    """config-ssh checks its block with `ssh -G`, and ssh -G runs a Match's
    exec: the certificate command must not run then (a --dry-run would ask
    the authority with the stored token, and write a certificate)."""
    with laptop_home() as home:
        args = ["config-ssh", f"{hub.url}/", "--name", NAME, "--ssh-config",
                str(home / ".ssh/config"), "--no-connection-sharing"]  # fmt: skip
        assert run_cli(*args, token=tokens[ANN], timeout=120).returncode == 0
        cert = home / f".ssh/jupyter-sshd-proxy/{NAME}-cert.pub"
        cert.unlink()  # the next connection would get one
        events = hub.workdir / "ca-events.log"
        issued = events.read_text().count('"serial"')
        dry = run_cli(*args, "--dry-run", token=tokens[ANN], timeout=120)
        assert dry.returncode == 0, dry.stderr
        assert not cert.exists()
        assert events.read_text().count('"serial"') == issued


def test_a_revoked_token_gets_no_certificate_at_once(hub, ann_key):
    """The docs promise that revoking a user's tokens stops new certificates
    at once: HubAuth's cache (5 minutes) must not keep the token alive."""
    body = {"public_key": ann_key.with_suffix(".pub").read_text()}
    status, reply = hub.api(
        "POST", f"/hub/api/users/{ANN}/tokens",
        {"note": "revoked soon", "expires_in": 3600, "scopes": [f"access:services!service={CA}"]},
    )  # fmt: skip
    assert status == 201, reply
    token, token_id = reply["token"], reply["id"]
    code, answer = sign(hub, token, body)
    assert code == 200, answer
    status, reply = hub.api("DELETE", f"/hub/api/users/{ANN}/tokens/{token_id}")
    assert status == 204, reply
    code, answer = sign(hub, token, body)
    assert (code, answer) == (
        401,
        {"message": "the Hub does not know this token (expired or revoked?)"},
    )
