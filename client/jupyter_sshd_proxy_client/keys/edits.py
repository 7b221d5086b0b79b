"""authorized_keys files: the keys one lets in, and edits that lose nothing.

Edits hold files.locked() from reading to writing, so concurrent edits (two
servers sharing a home directory) are never lost (a lock that only the user
can open: another account cannot hold edits back), and replace the file
atomically (mode 0600) through symbolic links, keeping every other line byte
for byte. Lines are split as sshd splits them, at "\\n" only, and each is read
by grammar.py. A host public key file is read here too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ..errors import FileEditError
from ..files import LOCK_TIMEOUT, locked, real_path, write_atomically
from .grammar import PublicKey, parse_file_line


def read_keys(path: str) -> list[PublicKey]:
    """The keys an authorized_keys file lets in, in the order of their lines."""
    found = []
    for line in _read_lines(path):
        key = parse_file_line(line.decode("utf-8", "surrogateescape"))
        if key is not None:
            found.append(key)
    return found


def add_key(path: str, key: PublicKey, wait: float = LOCK_TIMEOUT) -> bool:
    """Append key unless a line already lets it in (as itself, or as a
    certificate authority if key is one); False if one does. FileEditError if
    another edit holds the lock for more than wait seconds."""
    with _editing(path, wait) as target:
        lines = _read_lines(target)
        for line in lines:
            found = parse_file_line(line.decode("utf-8", "surrogateescape"))
            if found and (found.fingerprint, found.cert_authority) == (
                key.fingerprint,
                key.cert_authority,
            ):
                return False
        if lines and not lines[-1].endswith(b"\n"):
            lines[-1] += b"\n"
        lines.append((key.line or _line_of(key)).encode("utf-8") + b"\n")
        _write(target, b"".join(lines))
    return True


def remove_key(path: str, fingerprint: str, wait: float = LOCK_TIMEOUT) -> int:
    """Remove every line that lets the key with this fingerprint in; how many.
    FileEditError if another edit holds the lock for more than wait seconds."""
    with _editing(path, wait) as target:
        lines = _read_lines(target)
        kept = [line for line in lines if not _grants(line, fingerprint)]
        if len(kept) != len(lines):
            _write(target, b"".join(kept))
    return len(lines) - len(kept)


def _line_of(key: PublicKey) -> str:
    words = [key.options] if key.options else []
    words += [key.type, key.blob]
    if key.comment:
        words.append(key.comment)
    return " ".join(words)


def _grants(line: bytes, fingerprint: str) -> bool:
    key = parse_file_line(line.decode("utf-8", "surrogateescape"))
    return key is not None and key.fingerprint == fingerprint


def _read_lines(path: str) -> list[bytes]:
    """The file's lines, split as sshd splits them: at "\\n" only."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        return []
    except OSError as error:
        msg = f"cannot read {path}: {error.strerror}; check its permissions"
        raise FileEditError(msg) from None
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


@contextlib.contextmanager
def _editing(path: str, wait: float) -> Iterator[str]:
    """Hold the edit lock of path (files.locked, for at most wait seconds);
    yields the file to read and replace: path, or the target of its symbolic
    link. A missing directory is made (mode 0700), unless it is a link's."""
    target = real_path(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        if target != os.path.abspath(path):
            msg = (
                f"{path} is a symbolic link to {target}, whose directory does not exist; "
                "create that directory or fix the link"
            )
            raise FileEditError(msg)
        try:
            os.makedirs(directory, mode=0o700)
        except OSError as error:
            msg = f"cannot create {directory}: {error.strerror}; create it, mode 0700"
            raise FileEditError(msg) from None
    with locked(path, wait) as locked_target:
        yield locked_target


def _write(target: str, data: bytes) -> None:
    try:
        write_atomically(target, data, 0o600)
    except OSError as error:
        msg = (
            f"cannot write {target}: {error.strerror}; make its directory "
            f"{os.path.dirname(target)} writable"
        )
        raise FileEditError(msg) from None
