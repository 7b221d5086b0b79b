"""Key blobs against OpenSSH's own ssh-keygen (tests/unit/test_keys.py has the rest)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from jupyter_sshd_proxy_client.keys import edits, grammar


def b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def listed(tmp_path: Path, data: bytes) -> list[str]:
    path = tmp_path / "authorized_keys"
    path.write_bytes(data)
    return [key.fingerprint for key in edits.read_keys(str(path))]


@pytest.mark.parametrize("bits", [256, 384, 521])
def test_real_ecdsa_keys_have_ssh_keygens_fingerprints(tmp_path, bits):
    path = tmp_path / f"ecdsa{bits}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-b", str(bits), "-N", "", "-f", str(path)],
        check=True,
    )
    pub = path.with_suffix(".pub")
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    key = grammar.parse_key(pub.read_text().strip())
    assert (key.type, key.fingerprint) == (f"ecdsa-sha2-nistp{bits}", printed)
    type_word, data = pub.read_text().split()[:2]
    raw = bytearray(base64.b64decode(data))
    raw[-1] ^= 1  # the point is no longer on the curve
    assert listed(tmp_path, f"{type_word} {b64(bytes(raw))}\n".encode()) == []
