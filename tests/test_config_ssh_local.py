"""config-ssh on the laptop, where other accounts may live too: its locks,
its state directory, its control sockets, and paths that ssh_config must
hold exactly.

Against one real Jupyter server of this user: what config-ssh does on the
laptop does not depend on the server's account.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from .conftest import ServerSetup
from .helpers import FLOCK_ALL, HOLD_LOCK, Account, end_python, first_line, python_as
from .laptop import EXISTING_CONFIG, laptop_home, run_cli

LOCK_TIMEOUT = 10  # seconds config-ssh waits for another edit's lock (files.LOCK_TIMEOUT)


@pytest.fixture(scope="module")
def server(run_dir, client_key):
    with ServerSetup(Account.current(), run_dir, client_key).running() as server:
        yield server


@pytest.fixture
def laptop():
    with laptop_home() as home:
        yield home


def config_ssh(server, home: Path, *args: str, timeout: float = 60):
    config = str(home / ".ssh" / "config")
    return run_cli(
        "config-ssh", server.url + "/", "--name", "myhub", "--ssh-config", config, *args,
        token=server.token, timeout=timeout,
    )  # fmt: skip


def test_another_account_cannot_hold_back_config_ssh(server, laptop, attacker):
    """Was broken: config-ssh locked ~/.ssh itself, which every account that can
    open it (mode 0755 is common) can lock too; config-ssh then failed after
    10 s."""
    ssh_dir = laptop / ".ssh"
    for directory in (laptop, ssh_dir):
        directory.chmod(0o755)
    assert config_ssh(server, laptop).returncode == 0  # the lock file exists now
    attack = python_as(attacker, FLOCK_ALL, str(ssh_dir))
    try:
        held = json.loads(first_line(attack))
        assert str(ssh_dir) in held  # the old lock
        assert str(ssh_dir / ".jupyter-sshd-proxy.lock") not in held  # it cannot open this
        started = time.monotonic()
        result = config_ssh(server, laptop, "--name", "second")
        seconds = time.monotonic() - started
    finally:
        end_python(attack)
    assert result.returncode == 0, result.stderr
    assert seconds < LOCK_TIMEOUT - 2
    assert "\nHost second\n" in (ssh_dir / "config").read_text()


def test_a_lock_held_too_long_is_one_line_and_writes_nothing(server, laptop):
    config = laptop / ".ssh" / "config"
    holder = python_as(Account.current(), HOLD_LOCK, str(config))
    try:
        assert first_line(holder) == "held"
        result = config_ssh(server, laptop)
    finally:
        end_python(holder)
    lock = laptop / ".ssh" / ".jupyter-sshd-proxy.lock"
    assert result.returncode == 1
    assert result.stderr == (
        f"jupyter-sshd-proxy: {lock} has been held for {LOCK_TIMEOUT}s by another edit of a "
        f"file in {laptop / '.ssh'} (a Jupyter server or config-ssh of yours); try again when "
        "it is done\n"
    )
    assert config.read_text() == EXISTING_CONFIG
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert not (laptop / ".ssh" / "jupyter-sshd-proxy" / "known_hosts").exists()
