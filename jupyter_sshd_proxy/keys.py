"""Public key lines, read exactly as sshd reads them, and edits that lose nothing.

The REST API lists the keys that may log in and removes them on request. If
it read a line differently from sshd, a key could log in without being listed,
or outlive its removal. So every line is read with sshd's own rules (OpenSSH
9.x: auth2-pubkeyfile.c, sshkey.c, auth-options.c, base64.c):

* A file is split at "\\n" only (not at "\\r" or other line breaks), and a
  line ends at its first NUL byte. Spaces and tabs, and only those, separate
  words; leading ones are skipped; an empty line or one starting with "#" is
  skipped.
* If the first word is a key type, the line is "type base64 [comment]".
  Otherwise the line starts with options, which end at the first space or tab
  outside double quotes (\\" never opens or closes quotes), and the key
  follows. The options must then parse as sshd parses them (known names,
  case-insensitive; values in double quotes; commas between them), or sshd
  skips the whole line.
* The base64 may hold whitespace other than spaces and tabs (skipped), must be
  padded, with zero spare bits. The key inside must be complete and valid for
  its type, with nothing after it; its type name may also be sshd's short name
  (ED25519, RSA). The fingerprint is that of the key, not of the bytes in the
  line, as ssh-keygen -l prints it.

Options that sshd applies when a key is used (from=, expiry-time, and
cert-authority, which lets in certificates signed by the key rather than the
key) are returned with the key, for the caller to show.

A key sent to the API (parse_key) must also be one line, of at most MAX_LINE
characters of valid Unicode, and its options must be fully understood
(strict): values that sshd checks with the C library (times, ports, tunnel
devices) must be in their plain form. Lines already in a file are listed when
they can grant a key: there, values whose check depends on the C library are
taken as sshd might take them, so a line is never hidden that could let a key
in.

Edits hold files.locked() from reading to writing, so concurrent edits (two
servers sharing a home directory) are never lost, and replace the file
atomically (mode 0600) through symbolic links, keeping every other line byte
for byte.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime
import hashlib
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

from .errors import BadKeyError, FileEditError, SSHDProxyError
from .files import locked, real_path, write_atomically

MAX_LINE = 16 * 1024
SPACE = " \t"  # what separates words for sshd
C_SPACE = " \t\n\v\f\r"  # what C's isspace() skips inside base64

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
# Names sshd also reads, but whose keys can never log in here: DSA is not in
# sshd's default PubkeyAcceptedAlgorithms, and a certificate in
# authorized_keys never matches (certificates need cert-authority lines).
NEVER_GRANTED = re.compile(r"ssh-dss|ssh-xmss@openssh\.com|.*-cert-v01@openssh\.com")
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

# Options, in the order sshd tries them (auth-options.c sshauthopt_parse).
FLAG_OPTIONS = (
    ("restrict", False),  # (name, may be negated with "no-")
    ("cert-authority", False),
    ("port-forwarding", True),
    ("agent-forwarding", True),
    ("x11-forwarding", True),
    ("touch-required", True),
    ("verify-required", True),
    ("pty", True),
    ("user-rc", True),
)
VALUE_OPTIONS = (
    "command",
    "principals",
    "from",
    "expiry-time",
    "environment",
    "permitopen",
    "permitlisten",
    "tunnel",
)
SINGLE_OPTIONS = ("command", "principals", "from")  # "multiple ... clauses" otherwise
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
EXAMPLE_LINE = "give a public key line such as the content of ~/.ssh/id_ed25519.pub"


@dataclass(frozen=True)
class PublicKey:
    options: str  # "" when the line has none
    type: str  # the key's type, as ssh-keygen names it
    blob: str  # the key, base64, as ssh-keygen writes it
    comment: str
    line: str = ""  # the line as given, written as is by add_key
    cert_authority: bool = False  # it lets in certificates signed by the key, not the key

    @property
    def fingerprint(self) -> str:
        """SHA256:... as ssh-keygen -l prints it."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def as_json(self) -> dict:
        return {
            "type": self.type,
            "key": self.blob,
            "comment": _text(self.comment),
            "options": _text(self.options),
            "fingerprint": self.fingerprint,
        }


def printable(text: str) -> str:
    """text with every character that is not printable escaped (\\x1b, \\n, \\u2028),
    so that it cannot forge a log line or move a terminal's cursor."""
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def _text(text: str) -> str:
    """Text read from a file (bytes that are not UTF-8 kept as surrogates) for JSON."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# Reading a line as sshd does.


def parse_key(line: str, allow_options: bool = False) -> PublicKey:
    """One authorized_keys line given to the API, checked: a key sshd will take
    exactly as we read it, with options only when allowed."""
    if len(line) > MAX_LINE:
        msg = f"the key line is longer than {MAX_LINE} characters"
        raise BadKeyError(msg)
    if any(char in line for char in "\r\n\0"):
        msg = "the key must be a single line"
        raise BadKeyError(msg)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = printable(line[error.start : error.end])
        msg = f"the key line is not valid Unicode (it holds the lone surrogate {bad})"
        raise BadKeyError(msg) from None
    line = line.strip(SPACE)
    if not line:
        msg = "the key is empty"
        raise BadKeyError(msg)
    if line.startswith("#"):
        msg = f"the line is a comment, which sshd skips; {EXAMPLE_LINE}"
        raise BadKeyError(msg)
    key = _parse_line(line, strict=True)
    if key.options and not allow_options:
        msg = (
            f"the line starts with options ({printable(key.options[:60])}); they are refused "
            "unless allow_options is true"
        )
        raise BadKeyError(msg)
    return key


def parse_file_line(text: str) -> PublicKey | None:
    """The key one line of an authorized_keys file lets in, or None if sshd skips it.

    text is the line as read (bytes that are not UTF-8 as surrogates), with
    its "\\n"."""
    text = text.split("\0", 1)[0]
    start = _skip(text, 0, SPACE)
    if start == len(text) or text[start] in "\n#":
        return None
    try:
        return _parse_line(text[start:], strict=False)
    except BadKeyError:
        return None


def read_host_key(pub_path: str, private_path: str) -> PublicKey:
    """A host public key file; a corrupt one is a problem of the server's setup."""
    try:
        with open(pub_path, "rb") as stream:
            text = stream.read(MAX_LINE + 1).decode("utf-8").strip()
        return parse_key(text)
    except (OSError, UnicodeDecodeError, BadKeyError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        msg = (
            f"host key {pub_path} cannot be read as a public key ({printable(reason)}); "
            f"delete it, and it is made again from {private_path} on the next request"
        )
        raise SSHDProxyError(msg) from None


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _word_end(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] not in SPACE:
        pos += 1
    return pos


def _parse_line(text: str, strict: bool) -> PublicKey:
    """text starts at its first word; BadKeyError says why sshd would skip it."""
    first = text[: _word_end(text, 0)]
    if first in LINE_TYPES or NEVER_GRANTED.fullmatch(first):
        # Never options: no option name looks like a key type.
        return _read_key(text, 0, "", text)
    end = _options_end(text)
    options = text[:end]
    key_start = _skip(text, end, SPACE)
    word = text[key_start : _word_end(text, key_start)]
    if word not in LINE_TYPES and not NEVER_GRANTED.fullmatch(word):
        msg = f"{first[:40]!r} is not a supported key type; {EXAMPLE_LINE}"
        raise BadKeyError(msg)
    key = _read_key(text, key_start, options, text)
    if "cert-authority" in _check_options(text, strict):
        key = dataclasses.replace(key, cert_authority=True)
    return key


def _read_key(text: str, pos: int, options: str, line: str) -> PublicKey:
    """sshkey_read(): "type base64 [comment]" from pos."""
    type_end = _word_end(text, pos)
    word = text[pos:type_end]
    if word not in LINE_TYPES:
        msg = f"{word[:40]!r} is not a supported key type; {EXAMPLE_LINE}"
        raise BadKeyError(msg)
    blob_start = _skip(text, type_end, SPACE)
    if type_end == len(text) or blob_start == len(text):
        msg = f"the {word} key has no key data"
        raise BadKeyError(msg)
    blob_end = _word_end(text, blob_start)
    raw = _b64decode(text[blob_start:blob_end])
    if raw is None:
        msg = f"the {word} key data is not valid base64 key data"
        raise BadKeyError(msg)
    family, curve, canonical = _parse_blob(raw, word)
    if (family, curve) != LINE_TYPES[word]:
        name = CANONICAL_NAMES[family, curve]
        msg = f"the key data is of type {name!r}, but the line says {word}"
        raise BadKeyError(msg)
    comment = text[_skip(text, blob_end, SPACE) :].rstrip(C_SPACE)
    return PublicKey(
        options=options,
        type=CANONICAL_NAMES[family, curve],
        blob=base64.b64encode(canonical).decode("ascii"),
        comment=comment,
        line=line,
    )


def _b64decode(word: str) -> bytes | None:
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


def _parse_blob(raw: bytes, word: str) -> tuple[str, str | None, bytes]:
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


def _options_end(text: str) -> int:
    """sshkey_advance_past_options(): where the options end; BadKeyError if a
    quote is never closed."""
    quoted, pos = False, 0
    while pos < len(text) and (quoted or text[pos] not in SPACE):
        if text[pos] == "\\" and text[pos + 1 : pos + 2] == '"':
            pos += 1  # skip both
        elif text[pos] == '"':
            quoted = not quoted
        pos += 1
    if quoted:
        msg = "the options open a double quote that is never closed"
        raise BadKeyError(msg)
    return pos


def _check_options(text: str, strict: bool) -> set[str]:
    """sshauthopt_parse(): the options at the start of text, as sshd reads them;
    the names of those given (without "no-")."""
    seen: set[str] = set()
    pos = 0
    while pos < len(text) and text[pos] not in SPACE:
        pos = _one_option(text, pos, seen, strict)
        if pos >= len(text) or text[pos] in SPACE:
            break
        if text[pos] != ",":
            msg = f"unknown key option at {text[pos : pos + 30]!r}; sshd skips such a line"
            raise BadKeyError(msg)
        pos += 1
        if pos >= len(text):
            msg = "the options end with a comma"
            raise BadKeyError(msg)
    return seen


def _one_option(text: str, pos: int, seen: set[str], strict: bool) -> int:
    """Read the option at pos, if sshd knows one there; where it ends."""
    for name, negatable in FLAG_OPTIONS:
        start = pos
        if negatable and text[start : start + 3].translate(ASCII_LOWER) == "no-":
            start += 3
        if text[start : start + len(name)].translate(ASCII_LOWER) == name:
            seen.add(name)
            return start + len(name)
    for name in VALUE_OPTIONS:
        end = pos + len(name)
        if text[pos:end].translate(ASCII_LOWER) == name and text[end : end + 1] == "=":
            value, after = _dequote(text, end + 1, name)
            _check_value(name, value, seen, strict)
            seen.add(name)
            return after
    return pos  # nothing known here: sshd accepts only a comma (an empty option)


def _dequote(text: str, pos: int, name: str) -> tuple[str, int]:
    """opt_dequote(): a double-quoted value, in which \\" is a quote."""
    if text[pos : pos + 1] != '"':
        msg = f'the value of {name} must be in double quotes, as {name}="..."'
        raise BadKeyError(msg)
    value = []
    pos += 1
    while pos < len(text) and text[pos] != '"':
        if text[pos] == "\\" and text[pos + 1 : pos + 2] == '"':
            pos += 1
        value.append(text[pos])
        pos += 1
    if pos >= len(text):
        msg = f"the value of {name} has no closing double quote"
        raise BadKeyError(msg)
    return "".join(value), pos + 1


def _check_value(name: str, value: str, seen: set[str], strict: bool) -> None:
    """The checks sshd makes of an option's value when it reads the line."""
    problem = None
    if name in SINGLE_OPTIONS and name in seen:
        problem = f'more than one "{name}" option'
    elif name == "environment":
        variable, equals, _ = value.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z0-9_]+", variable):
            problem = f"environment={value[:40]!r} is not NAME=value"
    elif name == "expiry-time":
        problem = _expiry_problem(value, strict)
    elif strict and name in ("permitopen", "permitlisten"):
        if name == "permitlisten" and ":" not in value:
            value = "*:" + value
        match = re.fullmatch(r"(\[[^\]]+\]|[^:/\[\]]+)[:/](\*|[0-9]{1,5})", value)
        if not match or (match.group(2) != "*" and not 0 < int(match.group(2)) < 65536):
            problem = f"{name}={value[:60]!r} is not host:port"
    elif strict and name == "tunnel" and not _tunnel_device(value):
        problem = f"tunnel={value[:20]!r} is not a device number or any"
    if problem:
        msg = f"{problem}; sshd skips a line with such options"
        raise BadKeyError(msg)


def _tunnel_device(value: str) -> bool:
    """a2tun(): "any", or a device number."""
    if value.translate(ASCII_LOWER) == "any":
        return True
    return value.isascii() and value.isdigit() and int(value) <= 0x7FFFFFFD


def _expiry_problem(value: str, strict: bool) -> str | None:
    """parse_absolute_time(): YYYYMMDD[HHMM[SS]], optionally Z or UTC."""
    digits = value
    if len(value) > 3 and value[-3:].translate(ASCII_LOWER) == "utc":
        digits = value[:-3]
    elif len(value) > 1 and value[-1:] in "zZ":
        digits = value[:-1]
    problem = f"expiry-time={value[:20]!r} is not YYYYMMDD[HHMM[SS]][Z]"
    if len(digits) not in (8, 12, 14):
        return problem
    if strict:  # sshd reads the digits with strptime(), which takes more than this
        if not (digits.isascii() and digits.isdigit()):
            return problem
        try:
            datetime.datetime.strptime(digits, "%Y%m%d%H%M%S"[: len(digits) - 2])
        except ValueError:
            return problem
    return None


# Editing authorized_keys.


def read_keys(path: str) -> list[PublicKey]:
    """The keys an authorized_keys file lets in, in the order of their lines."""
    found = []
    for line in _read_lines(path):
        key = parse_file_line(line.decode("utf-8", "surrogateescape"))
        if key is not None:
            found.append(key)
    return found


def add_key(path: str, key: PublicKey) -> bool:
    """Append key unless a line already lets it in (as itself, or as a
    certificate authority if key is one); False if one does."""
    with _editing(path) as target:
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


def remove_key(path: str, fingerprint: str) -> int:
    """Remove every line that lets the key with this fingerprint in; how many."""
    with _editing(path) as target:
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
def _editing(path: str) -> Iterator[str]:
    """Hold the edit lock of path (files.locked); yields the file to read and
    replace: path, or the target of its symbolic link. A missing directory is
    made (mode 0700), unless it is a link's."""
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
    with contextlib.ExitStack() as stack:
        try:
            target = stack.enter_context(locked(path))
        except OSError as error:
            msg = f"cannot lock {directory}: {error.strerror}; check its permissions"
            raise FileEditError(msg) from None
        yield target


def _write(target: str, data: bytes) -> None:
    try:
        write_atomically(target, data, 0o600)
    except OSError as error:
        msg = (
            f"cannot write {target}: {error.strerror}; make its directory "
            f"{os.path.dirname(target)} writable"
        )
        raise FileEditError(msg) from None


def is_fingerprint(text: str) -> bool:
    return re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", text) is not None
