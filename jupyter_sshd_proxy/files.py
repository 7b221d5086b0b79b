"""Writing files so that a crash never leaves one half-written."""

from __future__ import annotations

import os
import secrets


def write_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write data to a new file beside path, flush it to disk, then rename it over path."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)  # the umask may have narrowed it
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
