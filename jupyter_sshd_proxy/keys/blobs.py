"""The key data of a public key line, decoded as sshd decodes it (sshkey.c, base64.c).

The base64 may hold whitespace other than spaces and tabs (skipped), must be
padded, with zero spare bits. The key inside must be complete and valid for
its type, with nothing after it; its type name may also be sshd's short name
(ED25519, RSA). An ECDSA key must be a point on its curve, as OpenSSL checks
it. parse_blob() gives the key as ssh-keygen serialises it, so that the
fingerprint is that of the key, not of the bytes in the line.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from typing import NoReturn

from ..errors import BadKeyError
from .libc import ASCII_LOWER, C_SPACE

# The first word of a key line, as sshd's key reader knows it (sshkey.c
# peek_type_nid): (algorithm family, ECDSA curve).
LINE_TYPES = {
    "ssh-ed25519": ("ed25519", None),
    "sk-ssh-ed25519@openssh.com": ("sk-ed25519", None),
    "ecdsa-sha2-nistp256": ("ecdsa", "nistp256"),
    "ecdsa-sha2-nistp384": ("ecdsa", "nistp384"),
    "ecdsa-sha2-nistp521": ("ecdsa", "nistp521"),
    "sk-ecdsa-sha2-nistp256@openssh.com": ("sk-ecdsa", "nistp256"),
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com": ("sk-ecdsa", "nistp256"),
    "ssh-rsa": ("rsa", None),
    "rsa-sha2-256": ("rsa", None),
    "rsa-sha2-512": ("rsa", None),
}
# The type name inside the key data may also be sshd's short name, in any case
# (sshkey_type_from_name); for ECDSA it must be the full name.
SHORT_NAMES = {"ed25519": "ed25519", "ed25519-sk": "sk-ed25519", "rsa": "rsa"}
CANONICAL_NAMES = {
    ("ed25519", None): "ssh-ed25519",
    ("sk-ed25519", None): "sk-ssh-ed25519@openssh.com",
    ("ecdsa", "nistp256"): "ecdsa-sha2-nistp256",
    ("ecdsa", "nistp384"): "ecdsa-sha2-nistp384",
    ("ecdsa", "nistp521"): "ecdsa-sha2-nistp521",
    ("sk-ecdsa", "nistp256"): "sk-ecdsa-sha2-nistp256@openssh.com",
    ("rsa", None): "ssh-rsa",
}
RSA_MIN_BITS = 1024  # SSH_RSA_MINIMUM_MODULUS_SIZE
MAX_BIGNUM_BYTES = 16384 // 8  # SSHBUF_MAX_BIGNUM


@dataclass(frozen=True)
class Curve:
    p: int  # field prime
    b: int  # y^2 = x^3 - 3x + b
    n: int  # group order

    @property
    def size(self) -> int:
        return (self.p.bit_length() + 7) // 8


CURVES = {
    "nistp256": Curve(
        p=2**256 - 2**224 + 2**192 + 2**96 - 1,
        b=int("5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B", 16),
        n=int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16),
    ),
    "nistp384": Curve(
        p=2**384 - 2**128 - 2**96 + 2**32 - 1,
        b=int(
            "B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875A"
            "C656398D8A2ED19D2A85C8EDD3EC2AEF",
            16,
        ),
        n=int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
            "581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
    ),
    "nistp521": Curve(
        p=2**521 - 1,
        b=int(
            "0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF1"
            "09E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00",
            16,
        ),
        n=int(
            "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
    ),
}


def b64decode(word: str) -> bytes | None:
    """base64 as OpenSSH's b64_pton() takes it: whitespace skipped, padding
    required, spare bits zero; None if it would refuse it."""
    clean = "".join(char for char in word if char not in C_SPACE)
    if len(clean) % 4 or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", clean):
        return None
    try:
        raw = base64.b64decode(clean, validate=True)
    except binascii.Error:
        return None
    if base64.b64encode(raw).decode("ascii") != clean:  # spare bits set
        return None
    return raw


class _Reader:
    """sshbuf's getters: every malformed field is a BadKeyError."""

    def __init__(self, data: bytes, word: str):
        self.data, self.pos, self.word = data, 0, word

    def fail(self, what: str) -> NoReturn:
        msg = f"the {self.word} key data is not a valid key ({what})"
        raise BadKeyError(msg)

    def string(self) -> bytes:
        if len(self.data) - self.pos < 4:
            self.fail("truncated")
        (length,) = struct.unpack_from(">I", self.data, self.pos)
        start = self.pos + 4
        if length > len(self.data) - start:
            self.fail("truncated")
        self.pos = start + length
        return self.data[start : self.pos]

    def cstring(self) -> bytes:
        value = self.string()
        if b"\0" in value[:-1]:  # a NUL is allowed only at the end
            self.fail("a name holds a NUL byte")
        return value.rstrip(b"\0")

    def mpint(self) -> int:
        value = self.string()
        if value and value[0] & 0x80:
            self.fail("a negative number")
        if len(value) > MAX_BIGNUM_BYTES + 1 or (
            len(value) == MAX_BIGNUM_BYTES + 1 and value[0] != 0
        ):
            self.fail("a number too large")
        return int.from_bytes(value, "big")


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _mpint(number: int) -> bytes:
    data = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    if data and data[0] & 0x80:
        data = b"\0" + data
    return _string(data)


def _blob_type(name: str) -> tuple[str, str | None] | None:
    if name in LINE_TYPES:
        return LINE_TYPES[name]
    family = SHORT_NAMES.get(name.translate(ASCII_LOWER))
    return (family, None) if family else None


def parse_blob(raw: bytes, word: str) -> tuple[str, str | None, bytes]:
    """sshkey_fromb(): (family, curve, the key as ssh-keygen serialises it)."""
    reader = _Reader(raw, word)
    name = reader.cstring().decode("latin-1")
    found = _blob_type(name)
    if found is None:
        reader.fail(f"of unknown type {name[:40]!r}")
    family, curve = found
    if family in ("ed25519", "sk-ed25519"):
        public = reader.string()
        if len(public) != 32:
            reader.fail("an Ed25519 key is 32 bytes")
        body = _string(public)
    elif family == "rsa":
        exponent, modulus = reader.mpint(), reader.mpint()
        if modulus.bit_length() < RSA_MIN_BITS:
            reader.fail(f"an RSA key needs at least {RSA_MIN_BITS} bits")
        body = _mpint(exponent) + _mpint(modulus)
    else:
        assert curve is not None  # every ECDSA type in LINE_TYPES names its curve
        if reader.cstring() != curve.encode():
            reader.fail(f"its curve is not {curve}")
        point = reader.string()
        if not _valid_point(CURVES[curve], point):
            reader.fail(f"not a valid point of {curve}")
        body = _string(curve.encode()) + _string(point)
    if family.startswith("sk-"):
        body += _string(reader.cstring())  # the FIDO application
    if reader.pos != len(raw):
        reader.fail("data after the key")
    return family, curve, _string(CANONICAL_NAMES[family, curve].encode()) + body


def _valid_point(curve: Curve, point: bytes) -> bool:
    """An uncompressed point on the curve, as sshkey_ec_validate_public() wants it."""
    if len(point) != 1 + 2 * curve.size or point[0] != 4:
        return False
    x = int.from_bytes(point[1 : 1 + curve.size], "big")
    y = int.from_bytes(point[1 + curve.size :], "big")
    if x >= curve.p or y >= curve.p:
        return False
    if (y * y - (x * x * x - 3 * x + curve.b)) % curve.p:
        return False
    half = curve.n.bit_length() // 2
    return x.bit_length() > half and y.bit_length() > half and x < curve.n - 1 and y < curve.n - 1
