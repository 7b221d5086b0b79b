"""Public key lines: validate, fingerprint, and edit authorized_keys safely.

Edits keep every other line of the file byte for byte, and replace the file
atomically (mode 0600), so a crash never leaves it half-written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
from dataclasses import dataclass

from .errors import BadKeyError
from .files import write_atomically

KEY_TYPES = frozenset(
    (
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    )
)
MAX_LINE = 16 * 1024


@dataclass(frozen=True)
class PublicKey:
    options: str  # "" when the line has none
    type: str
    blob: str  # base64, as in the line
    comment: str

    @property
    def fingerprint(self) -> str:
        """SHA256:... as ssh-keygen -l prints it."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def line(self) -> str:
        words = [self.options] if self.options else []
        words += [self.type, self.blob]
        if self.comment:
            words.append(self.comment)
        return " ".join(words)

    def as_json(self) -> dict:
        return {
            "type": self.type,
            "key": self.blob,
            "comment": self.comment,
            "options": self.options,
            "fingerprint": self.fingerprint,
        }


def _split_options(line: str) -> tuple[str, str]:
    """Split 'opt1,opt2="a b" type blob ...' into options and the rest, honouring quotes."""
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            return line[:index], line[index:].lstrip()
    return line, ""


def parse_key(line: str, allow_options: bool = False) -> PublicKey:
    """One authorized_keys line, checked: a real key, options only when allowed."""
    if len(line) > MAX_LINE:
        msg = f"the key line is longer than {MAX_LINE} characters"
        raise BadKeyError(msg)
    if any(char in line for char in "\r\n\0"):
        msg = "the key must be a single line"
        raise BadKeyError(msg)
    line = line.strip()
    if not line:
        msg = "the key is empty"
        raise BadKeyError(msg)
    options = ""
    first = line.split(None, 1)[0]
    if first not in KEY_TYPES:
        options, rest = _split_options(line)
        if not rest or rest.split(None, 1)[0] not in KEY_TYPES:
            msg = (
                f"{first[:40]!r} is not a supported key type; give a public key line such "
                "as the content of ~/.ssh/id_ed25519.pub"
            )
            raise BadKeyError(msg)
        if not allow_options:
            msg = (
                f"the line starts with options ({options[:60]}); they are refused unless "
                "allow_options is true"
            )
            raise BadKeyError(msg)
        line = rest
    words = line.split(None, 2)
    if len(words) < 2:
        msg = f"the {words[0]} key has no key data"
        raise BadKeyError(msg)
    key_type, blob = words[0], words[1]
    comment = words[2].strip() if len(words) > 2 else ""
    try:
        raw = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", raw[:4])
        embedded = raw[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        msg = f"the {key_type} key data is not valid base64 key data"
        raise BadKeyError(msg) from None
    if embedded != key_type:
        msg = f"the key data is of type {embedded!r}, but the line says {key_type}"
        raise BadKeyError(msg)
    return PublicKey(options, key_type, blob, comment)


def read_keys(path: str) -> list[PublicKey]:
    """The valid keys in an authorized_keys file (comments and junk are skipped)."""
    keys = []
    for line in _read_lines(path):
        text = line.decode(errors="replace").strip()
        if not text or text.startswith("#"):
            continue
        try:
            keys.append(parse_key(text, allow_options=True))
        except BadKeyError:
            continue
    return keys


def add_key(path: str, key: PublicKey) -> bool:
    """Append key unless a line with the same key is there; False if it was."""
    lines = _read_lines(path)
    if any(_same_key(line, key.fingerprint) for line in lines):
        return False
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"
    lines.append(key.line.encode() + b"\n")
    _replace(path, b"".join(lines))
    return True


def remove_key(path: str, fingerprint: str) -> int:
    """Remove every line holding the key with this fingerprint; how many were removed."""
    lines = _read_lines(path)
    kept = [line for line in lines if not _same_key(line, fingerprint)]
    if len(kept) != len(lines):
        _replace(path, b"".join(kept))
    return len(lines) - len(kept)


def _same_key(line: bytes, fingerprint: str) -> bool:
    text = line.decode(errors="replace").strip()
    if not text or text.startswith("#"):
        return False
    try:
        return parse_key(text, allow_options=True).fingerprint == fingerprint
    except BadKeyError:
        return False


def _read_lines(path: str) -> list[bytes]:
    try:
        with open(path, "rb") as stream:
            return stream.read().splitlines(keepends=True)
    except FileNotFoundError:
        return []


def _replace(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    write_atomically(path, data, 0o600)


def is_fingerprint(text: str) -> bool:
    return re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", text) is not None
