"""The keys the API lists are the keys sshd lets in, and DELETE removes exactly those.

Tricky authorized_keys lines, all in one file, with real keys: each key is
tried with real ssh through a real server, and the API's list must be exactly
the keys that logged in. Then every key is removed through the API: 204 for
those sshd let in (and they no longer can), 404 for the others, and the lines
that let no key in stay byte for byte.
"""

from __future__ import annotations

import base64
import re
import struct
import subprocess
import urllib.parse

import pytest

from ..support.api import call, fingerprint_of
from ..support.helpers import SSHClient, make_key


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _fields(blob: bytes) -> list[bytes]:
    fields, pos = [], 0
    while pos < len(blob):
        (length,) = struct.unpack_from(">I", blob, pos)
        fields.append(blob[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return fields


def short_type_name(data: str) -> str:
    """The same Ed25519 key, named "ED25519" inside its data (sshd's short name)."""
    public = _fields(base64.b64decode(data))[1]
    return base64.b64encode(_string(b"ED25519") + _string(public)).decode()


def padded_numbers(data: str) -> str:
    """The same RSA key, its numbers written with leading zero bytes."""
    name, exponent, modulus = _fields(base64.b64decode(data))
    blob = _string(name) + _string(b"\0\0" + exponent) + _string(b"\0" + modulus)
    return base64.b64encode(blob).decode()


def vertical_tabs(data: str) -> str:
    return f"{data[:10]}\v{data[10:30]}\f{data[30:]}"


# (the line, with {X} for key X's base64 and {X:how} for a changed form of it;
#  the keys sshd lets in). The last line has no newline.
LINES = [
    ('command="echo \\"hi there\\"" ssh-ed25519 {A} c\n', "A"),
    ('environment="X=\\" ssh-ed25519 {B} \\"" ssh-ed25519 {C}\n', "C"),
    ('command="ssh-ed25519 {D}" ssh-ed25519 {E}\n', "E"),
    (" \t ssh-ed25519 {F} leading spaces\n", "F"),
    ("ssh-ed25519\t{G}\tcomment\n", "G"),
    ("\vssh-ed25519 {H}\n", ""),
    ("ssh-ed25519 {I}\rssh-ed25519 {J} x\n", ""),
    ("unknown-option ssh-ed25519 {K}\n", ""),
    ("RESTRICT,No-Pty,pty ssh-ed25519 {L}\n", "L"),
    ('environment="BAD-NAME=1" ssh-ed25519 {M}\n', ""),
    ('command="true",command="true" ssh-ed25519 {N}\n', ""),
    (",restrict ssh-ed25519 {O}\n", "O"),
    ("restrict, ssh-ed25519 {P}\n", "P"),
    ("ssh-ed25519 {Q} c\0ssh-ed25519 {R}\n", "Q"),
    ("ssh-ed25519 {S:vertical_tabs} c\n", "S"),
    ("ssh-ed25519 {T:short_type_name}\n", "T"),
    ("rsa-sha2-512 {U:padded_numbers} rsa\n", "U"),
    ('from="*",expiry-time="20990101" ssh-ed25519 {V} caf\xe9\n', "V"),
    ("from=127.0.0.1 ssh-ed25519 {W}\n", ""),
    ('command="echo ssh-ed25519 {X}\n', ""),
    ("ssh-ed25519 {Y}", "Y"),
]
CHANGES = {"vertical_tabs": vertical_tabs, "short_type_name": short_type_name,
           "padded_numbers": padded_numbers}  # fmt: skip


@pytest.fixture(scope="module")
def table_keys(run_dir, setup):
    directory = run_dir / f"lines-{setup.account.name}"
    directory.mkdir(mode=0o700)
    found = {}
    for label in "ABCDEFGHIJKLMNOPQRSTVWXY":
        found[label] = make_key(directory / label)
    rsa = directory / "U"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True
    )
    found["U"] = rsa
    return found


def render(line: str, table_keys) -> bytes:
    def key(label: str, how: str | None = None) -> str:
        data = table_keys[label].with_suffix(".pub").read_text().split()[1]
        return CHANGES[how](data) if how else data

    return re.sub(r"\{(\w)(?::(\w+))?\}", lambda match: key(*match.groups()), line).encode(
        "latin-1"
    )


def test_listed_keys_are_the_keys_that_log_in(server, setup, client_key, table_keys):
    ssh = SSHClient(server, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")
    original = setup.authorized_keys.read_bytes()
    lines = [render(line, table_keys) for line, _ in LINES]
    granted = {label for _, labels in LINES for label in labels}
    fingerprints = {
        label: fingerprint_of(path.with_suffix(".pub")) for label, path in table_keys.items()
    }

    def logs_in(label: str) -> bool:
        # A forced command may fail; a refused key is ssh's 255 and "Permission denied".
        result = ssh.ssh("true", identity=table_keys[label])
        refused = result.returncode == 255
        assert not refused or b"Permission denied" in result.stderr, result.stderr
        return not refused

    try:
        setup.authorized_keys.write_bytes(original + b"".join(lines))
        status, body = call(server, "GET", "/authorized-keys")
        assert status == 200, body
        listed = {key["fingerprint"] for key in body["keys"]}
        by_fingerprint = {value: label for label, value in fingerprints.items()}
        listed_labels = {by_fingerprint[value] for value in listed if value in by_fingerprint}
        logged_in = {label for label in table_keys if logs_in(label)}
        assert (listed_labels, logged_in) == (granted, granted)

        for label in sorted(table_keys):
            query = "?fingerprint=" + urllib.parse.quote(fingerprints[label], safe="")
            status, body = call(server, "DELETE", "/authorized-keys" + query)
            assert status == (204 if label in granted else 404), (label, body)
        assert not {label for label in granted if logs_in(label)}
        kept = [line for line, (_, labels) in zip(lines, LINES) if not labels]
        assert setup.authorized_keys.read_bytes() == original + b"".join(kept)
    finally:
        setup.authorized_keys.write_bytes(original)
