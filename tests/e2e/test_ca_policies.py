"""A certificate login is held to the server's policy (c.SSHDProxy.policy):
the permit-* extensions a certificate carries widen nothing. The real sshd
and clients, a certificate authority made here with ssh-keygen (no Hub),
and a key that is not in authorized_keys: it logs in by its certificate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ..support.helpers import SSHClient, make_key
from .test_policies import SFTP_ONLY, assert_forwarding_refused

HUB_USER = "ann"
EVERY_EXTENSION = [
    "-O", "clear", "-O", "permit-pty", "-O", "permit-port-forwarding",
    "-O", "permit-agent-forwarding", "-O", "permit-X11-forwarding", "-O", "permit-user-rc",
]  # fmt: skip


@pytest.fixture
def once(account):
    if account.is_current and os.getuid() == 0:
        pytest.skip("runs once, with the server as the unprivileged account")


@pytest.fixture(scope="module")
def authority():
    """The CA's public key in a directory the server's account can read."""
    directory = Path(tempfile.mkdtemp(prefix="jsp-ca-policy-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        ca = make_key(directory / "ca")
        (directory / "ca.pub").chmod(0o644)
        yield ca
    finally:
        shutil.rmtree(directory)


@pytest.fixture(scope="module")
def certified(run_dir, authority):
    directory = run_dir / "certified"
    directory.mkdir(mode=0o700)
    key = make_key(directory / "id_ed25519")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(authority), "-I", HUB_USER, "-n", f"hub:{HUB_USER}",
         "-V", "-5m:+1h", *EVERY_EXTENSION, f"{key}.pub"],
        check=True,
    )  # fmt: skip
    return key


def fingerprint(key: Path) -> str:
    listing = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True
    )
    return listing.stdout.split()[1]


def running(setup, authority, policy: str):
    return setup.running(
        JUPYTER_SSHD_PROXY_POLICY=policy,
        JUPYTER_SSHD_PROXY_TRUSTED_USER_CA_KEYS=f"{authority}.pub",
        JUPYTERHUB_USER=HUB_USER,
    )


def client(server, setup, key) -> SSHClient:
    return SSHClient(server, key, setup.known_hosts, proxy="jupyter-sshd-proxy")


def test_no_forwarding_holds_for_a_certificate_that_permits_it(once, setup, authority, certified):
    with running(setup, authority, "no-forwarding") as server:
        ssh = client(server, setup, certified)
        result = ssh.ssh("echo $JUPYTERHUB_USER")
        assert result.returncode == 0, result.stderr
        assert f"ED25519-CERT {fingerprint(certified)} ID {HUB_USER}" in server.log()
        assert_forwarding_refused(ssh)


def test_sftp_only_holds_for_a_certificate_that_permits_a_terminal(
    once, setup, authority, certified
):
    with running(setup, authority, "sftp-only") as server:
        ssh = client(server, setup, certified)
        result = ssh.ssh("echo hello")
        assert result.returncode == 1
        assert b"hello" not in result.stdout
        assert SFTP_ONLY in result.stdout + result.stderr
        assert f"ED25519-CERT {fingerprint(certified)} ID {HUB_USER}" in server.log()
