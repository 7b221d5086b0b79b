"""Editing files so that a crash never leaves one half-written and no edit is lost.

write_atomically() writes a new file beside the target and renames it over
the target. A symlinked target (dotfile managers link ~/.ssh/config and
~/.ssh/authorized_keys) is written through: the link stays, and its final
target is replaced, in the target's own directory.

locked() serialises read-modify-write edits between processes (two named
servers sharing a home directory, two config-ssh runs): it holds an exclusive
flock on the directory that holds the file, so no lock file is left behind.
Programs that do not take the lock (ssh-copy-id) are not held back by it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator

from .errors import FileEditError

LOCK_TIMEOUT = 10.0  # seconds to wait for another edit of the same directory


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


@contextlib.contextmanager
def locked(path: str, timeout: float = LOCK_TIMEOUT) -> Iterator[str]:
    """Hold the edit lock for path's directory; yields path's real target.

    Read the file, change it and write it inside the block: another process
    that edits the same directory through locked() waits until the block ends.
    """
    target = real_path(path)
    directory = os.path.dirname(target)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; edits there are not serialised
        yield target
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    msg = (
                        f"another program has been editing a file in {directory} for "
                        f"{timeout:g}s; try again when it is done"
                    )
                    raise FileEditError(msg) from None
                time.sleep(0.01)
        yield target
    finally:
        os.close(fd)  # closing the descriptor releases the lock
