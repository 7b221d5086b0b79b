"""Editing files so that a crash never leaves one half-written and no edit is lost.

write_atomically() writes a new file beside the target and renames it over
the target. A symlinked target (dotfile managers link ~/.ssh/config and
~/.ssh/authorized_keys) is written through: the link stays, and its final
target is replaced, in the target's own directory.

locked() serialises read-modify-write edits between processes (two named
servers sharing a home directory, two config-ssh runs): it holds an exclusive
flock on LOCK_NAME, a file of mode 0600 beside the file as it is named (in
~/.ssh for ~/.ssh/config, even when that links into a dotfiles repository).
Only the user can open that file, so only the user's own programs can hold
the lock: another account that can open ~/.ssh (mode 0755 is common) could
hold a lock on the directory itself, and block every edit. A lock file that
others could have opened (not the user's, not 0600, a symbolic link) is
refused, never used. Programs that do not take the lock (ssh-copy-id) are not
held back by it. The wait is a loop of short tries, bounded by a timeout: the
Jupyter server runs it in a thread, never on its event loop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Iterator

from .errors import FileEditError

LOCK_TIMEOUT = 10.0  # seconds to wait for another edit of the same directory
LOCK_NAME = ".jupyter-sshd-proxy.lock"


def real_path(path: str) -> str:
    """The file that writing to path changes: path, or the end of its symlink chain."""
    real = os.path.realpath(path)
    if os.path.islink(real):
        msg = f"{path} is a symbolic link that never ends (a loop); fix the link by hand"
        raise FileEditError(msg)
    return real


def write_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write data to a new file beside path's real target, flush it, and rename it over."""
    target = real_path(path)
    directory, name = os.path.split(target)
    temporary = os.path.join(directory, f".{name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)  # the umask may have narrowed it
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def lock_path(path: str) -> str:
    """The lock file of edits of path: LOCK_NAME in the directory path is named in."""
    return os.path.join(os.path.dirname(os.path.abspath(path)), LOCK_NAME)


@contextlib.contextmanager
def locked(path: str, timeout: float = LOCK_TIMEOUT) -> Iterator[str]:
    """Hold the edit lock of path's directory; yields path's real target.

    Read the file, change it and write it inside the block: another process
    that edits a file of the same directory through locked() waits until the
    block ends, for at most timeout seconds (then FileEditError).
    """
    target = real_path(path)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; edits there are not serialised
        yield target
        return
    lock = lock_path(path)
    deadline = time.monotonic() + timeout
    fd = _open_lock(lock)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    msg = (
                        f"{lock} has been held for {timeout:g}s by another edit of a file in "
                        f"{os.path.dirname(lock)} (a Jupyter server or config-ssh of yours); "
                        "try again when it is done"
                    )
                    raise FileEditError(msg) from None
                time.sleep(0.01)
                continue
            if _is_open(lock, fd):
                break
            # Removed or replaced while we waited: the lock that counts is the new file.
            os.close(fd)
            fd = -1
            fd = _open_lock(lock)
        yield target
    finally:
        if fd >= 0:
            os.close(fd)  # closing the descriptor releases the lock


def _open_lock(lock: str) -> int:
    """A descriptor of the lock file, made if missing; FileEditError unless it is
    a regular file of this user that nobody else can open."""
    flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    problem: str | None
    try:
        fd = os.open(lock, flags, 0o600)
    except OSError as error:
        if os.path.islink(lock):
            problem = "it is a symbolic link"
        elif os.path.lexists(lock) and not os.path.isfile(lock):
            problem = "it is not a regular file"
        else:
            msg = (
                f"cannot open the lock file {lock}: {error.strerror or error}; make "
                f"{os.path.dirname(lock)} a directory of yours that you can write"
            )
            raise FileEditError(msg) from None
    else:
        info = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "it is not a regular file"
        elif info.st_uid != os.geteuid():
            problem = f"it belongs to uid {info.st_uid}"
        elif info.st_mode & 0o077:
            problem = f"its mode is {stat.S_IMODE(info.st_mode):04o}"
        if problem is None:
            return fd
        os.close(fd)
    msg = (
        f"refusing the lock file {lock}: {problem}, so another account may hold it and "
        "block every edit; remove it, and it is made again"
    )
    raise FileEditError(msg)


def _is_open(lock: str, fd: int) -> bool:
    """Whether the path lock still names the file open as fd."""
    try:
        info = os.stat(lock, follow_symlinks=False)
    except OSError:
        return False
    opened = os.fstat(fd)
    return (info.st_dev, info.st_ino) == (opened.st_dev, opened.st_ino)
