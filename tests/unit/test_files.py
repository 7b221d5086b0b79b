"""files.locked(): a lock that only the user's own programs can hold."""

from __future__ import annotations

import fcntl
import os
import stat
import time

import pytest

from jupyter_sshd_proxy_client.errors import FileEditError
from jupyter_sshd_proxy_client.files import locked


def test_the_lock_is_a_0600_file_beside_the_file_as_named(tmp_path):
    """Beside ~/.ssh/config even when that links into a dotfiles repository,
    which stays as it was."""
    (tmp_path / "ssh").mkdir()
    (tmp_path / "dotfiles").mkdir()
    (tmp_path / "dotfiles" / "ssh_config").write_text("Host x\n")
    config = tmp_path / "ssh" / "config"
    config.symlink_to("../dotfiles/ssh_config")
    with locked(str(config)) as target:
        assert target == str(tmp_path / "dotfiles" / "ssh_config")
    lock = tmp_path / "ssh" / ".jupyter-sshd-proxy.lock"
    assert stat.S_IMODE(lock.lstat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "dotfiles").iterdir()] == ["ssh_config"]


def test_a_held_lock_is_one_line_after_the_timeout(tmp_path):
    path = tmp_path / "authorized_keys"
    lock = tmp_path / ".jupyter-sshd-proxy.lock"
    with locked(str(path)):
        other = os.open(lock, os.O_RDONLY)  # another open file: flock conflicts
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            pytest.fail("the lock was not held")
        except BlockingIOError:
            pass
        finally:
            os.close(other)
    holder = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(FileEditError) as raised, locked(str(path), timeout=0.3):
            pass
        assert 0.3 <= time.monotonic() - started < 3
    finally:
        os.close(holder)
    assert str(raised.value) == (
        f"{lock} has been held for 0.3s by another edit of a file in {tmp_path} (a Jupyter "
        "server or config-ssh of yours); try again when it is done"
    )


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda lock: (lock.touch(), lock.chmod(0o644)), "its mode is 0644"),
        (lambda lock: (lock.touch(), lock.chmod(0o660)), "its mode is 0660"),
        (lambda lock: lock.symlink_to("elsewhere"), "it is a symbolic link"),
        (lambda lock: lock.mkdir(), "it is not a regular file"),
        (lambda lock: os.mkfifo(lock, 0o600), "it is not a regular file"),
    ],
    ids=["readable by others", "by the group", "a symlink", "a directory", "a fifo"],
)
def test_a_lock_file_that_others_may_have_opened_is_refused(tmp_path, make, problem):
    lock = tmp_path / ".jupyter-sshd-proxy.lock"
    make(lock)
    with pytest.raises(FileEditError) as raised, locked(str(tmp_path / "config")):
        pytest.fail("edited under a lock that others may hold")
    assert str(raised.value) == (
        f"refusing the lock file {lock}: {problem}, so another account may hold it and "
        "block every edit; remove it, and it is made again"
    )


@pytest.mark.skipif(os.getuid() != 0, reason="a file of another owner needs root")
def test_a_lock_file_of_another_account_is_refused(tmp_path):
    lock = tmp_path / ".jupyter-sshd-proxy.lock"
    lock.touch(mode=0o600)
    os.chown(lock, 65534, 65534)  # nobody
    with pytest.raises(FileEditError) as raised, locked(str(tmp_path / "config")):
        pytest.fail("edited under a lock that another account may hold")
    assert str(raised.value) == (
        f"refusing the lock file {lock}: it belongs to uid 65534, so another account may hold "
        "it and block every edit; remove it, and it is made again"
    )


def test_a_lock_file_removed_while_waited_for_is_made_again(tmp_path):
    """The lock that counts is the file the path names: a process that got the
    lock of a removed file locks the new one."""
    path = tmp_path / "config"
    lock = tmp_path / ".jupyter-sshd-proxy.lock"
    with locked(str(path)):
        lock.unlink()
        with locked(str(path), timeout=0.3):
            assert lock.exists()
