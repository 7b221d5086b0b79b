"""Key lines are read as sshd reads them: unit tests, no sshd, no Jupyter.

Each line of the table is what sshd would do with it (OpenSSH 9.x,
auth2-pubkeyfile.c, sshkey.c, auth-options.c): the keys listed for a file must
be exactly the keys sshd lets in, with the fingerprints ssh-keygen prints.
tests/e2e/test_key_lines.py logs in with real keys to show that sshd agrees.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import pytest

from jupyter_sshd_proxy_client.errors import BadKeyError
from jupyter_sshd_proxy_client.keys import edits, grammar


def string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def mpint(number: int, padding: int = 0) -> bytes:
    data = number.to_bytes((number.bit_length() + 8) // 8, "big")
    return string(b"\0" * padding + data)


def fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


class Ed25519:
    """A made-up Ed25519 public key (sshd checks only its length when it reads it)."""

    def __init__(self, label: str):
        self.public = hashlib.sha256(label.encode()).digest()

    @property
    def blob(self) -> bytes:
        return string(b"ssh-ed25519") + string(self.public)

    def line(self, comment: str = "") -> str:
        return f"ssh-ed25519 {b64(self.blob)} {comment}".rstrip()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)


# A made-up 2048-bit RSA modulus: sshd checks the size, not the factors.
MODULUS = int.from_bytes(hashlib.sha512(b"n").digest() * 4, "big") | (1 << 2047) | 1
RSA_BLOB = string(b"ssh-rsa") + mpint(65537) + mpint(MODULUS)

K = {label: Ed25519(label) for label in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def listed(tmp_path: Path, data: bytes) -> list[str]:
    path = tmp_path / "authorized_keys"
    path.write_bytes(data)
    return [key.fingerprint for key in edits.read_keys(str(path))]


def fp(label: str) -> str:
    return K[label].fingerprint


def blob(label: str) -> str:
    return b64(K[label].blob)


# (what the line shows, the file's bytes, the labels of the keys sshd lets in)
LINES = [
    ("escaped quotes in a command",
     f'command="echo \\"hi there\\"" ssh-ed25519 {blob("A")} c\n', ["A"]),
    ("an escaped quote that does not close the value",
     f'environment="X=\\" ssh-ed25519 {blob("B")} \\"" ssh-ed25519 {blob("C")}\n', ["C"]),
    ("a key type inside a quoted option",
     f'command="ssh-ed25519 {blob("D")}" ssh-ed25519 {blob("E")}\n', ["E"]),
    ("leading spaces and tabs", f" \t ssh-ed25519 {blob('F')} lead\n", ["F"]),
    ("tabs between words", f"ssh-ed25519\t{blob('G')}\tcomment\twith tab\n", ["G"]),
    ("a vertical tab first: not a key type", f"\vssh-ed25519 {blob('H')}\n", []),
    ("a carriage return is not a line break",
     f"ssh-ed25519 {blob('I')}\rssh-ed25519 {blob('J')} x\n", []),
    ("an unknown option", f"unknown-option ssh-ed25519 {blob('K')}\n", []),
    ("known options in any case", f"RESTRICT,No-Pty,pty ssh-ed25519 {blob('L')}\n", ["L"]),
    ("a bad environment name", f'environment="BAD-NAME=1" ssh-ed25519 {blob("M")}\n', []),
    ("two commands", f'command="a",command="b" ssh-ed25519 {blob("N")}\n', []),
    ("an empty option before a comma", f",restrict ssh-ed25519 {blob('O')}\n", ["O"]),
    ("a comma before the key", f"restrict, ssh-ed25519 {blob('P')}\n", ["P"]),
    ("a NUL ends the line", f"ssh-ed25519 {blob('Q')} c\0ssh-ed25519 {blob('R')}\n", ["Q"]),
    ("a comment line", f"# ssh-ed25519 {blob('S')}\n", []),
    ("an unterminated quote", f'command="echo ssh-ed25519 {blob("T")}\n', []),
    ("an option without quotes", f"from=127.0.0.1 ssh-ed25519 {blob('U')}\n", []),
    ("options, and a comment that is not UTF-8",
     f'from="127.0.0.1",expiry-time="20990101" ssh-ed25519 {blob("V")} caf\xe9\n', ["V"]),
    ("a quoted option name", f'"restrict" ssh-ed25519 {blob("W")}\n', []),
    ("an expiry time of the wrong length",
     f'expiry-time="2099" ssh-ed25519 {blob("X")}\n', []),
    ("CRLF", f"ssh-ed25519 {blob('Y')}\r\n", ["Y"]),
    ("the last line, without a newline", f"ssh-ed25519 {blob('Z')}", ["Z"]),
]  # fmt: skip


def encode(text: str) -> bytes:
    return text.encode("latin-1")  # \xe9: a byte that is not UTF-8


@pytest.mark.parametrize(("what", "line", "labels"), LINES, ids=[entry[0] for entry in LINES])
def test_a_line_grants_what_sshd_grants(tmp_path, what, line, labels):
    assert listed(tmp_path, encode(line)) == [fp(label) for label in labels]


def test_a_file_of_tricky_lines_lists_exactly_their_keys(tmp_path):
    data = b"".join(encode(line) for _, line, _ in LINES)
    expected = [fp(label) for _, _, labels in LINES for label in labels]
    assert listed(tmp_path, data) == expected


def test_whitespace_inside_the_base64_is_skipped(tmp_path):
    text = blob("A")
    line = f"ssh-ed25519 {text[:20]}\v{text[20:40]}\f{text[40:]}\r comment\n"
    assert listed(tmp_path, line.encode()) == [fp("A")]


def test_a_short_type_name_inside_the_key_data_is_the_same_key(tmp_path):
    """sshd takes "ED25519" (any case) for ssh-ed25519 inside the data: the key
    is K["A"], with K["A"]'s fingerprint."""
    for name in (b"ED25519", b"ed25519", b"ssh-ed25519\0"):
        data = b64(string(name) + string(K["A"].public))
        assert listed(tmp_path, f"ssh-ed25519 {data}\n".encode()) == [fp("A")], name


def test_rsa_key_names_and_padded_numbers(tmp_path):
    padded = string(b"ssh-rsa") + mpint(65537, padding=3) + mpint(MODULUS, padding=1)
    lines = [
        f"rsa-sha2-512 {b64(RSA_BLOB)} a\n",
        f"rsa-sha2-256 {b64(RSA_BLOB)} b\n",
        f"ssh-rsa {b64(padded)} c\n",
    ]
    assert listed(tmp_path, "".join(lines).encode()) == [fingerprint(RSA_BLOB)] * 3
    small = string(b"ssh-rsa") + mpint(65537) + mpint(MODULUS >> 1200)
    negative = string(b"ssh-rsa") + mpint(65537) + string(MODULUS.to_bytes(256, "big"))
    for bad in (small, negative):
        assert listed(tmp_path, f"ssh-rsa {b64(bad)}\n".encode()) == []


@pytest.mark.parametrize(
    ("what", "data"),
    [
        ("31 bytes", string(b"ssh-ed25519") + string(b"x" * 31)),
        ("data after the key", K["A"].blob + b"\0"),
        ("a NUL inside the name", string(b"ssh\0ed25519") + string(K["A"].public)),
        ("an unknown name", string(b"ssh-ed448") + string(K["A"].public)),
        ("ECDSA's short name", string(b"ECDSA") + string(b"nistp256") + string(b"\4" * 65)),
    ],
)
def test_invalid_key_data_grants_nothing(tmp_path, what, data):
    assert listed(tmp_path, f"ssh-ed25519 {b64(data)}\n".encode()) == []


def test_base64_with_spare_bits_or_without_padding_grants_nothing(tmp_path):
    data = string(b"ssh-ed25519\0") + string(K["A"].public)  # 52 bytes: "==" padding
    text = b64(data)
    assert text.endswith("==")
    assert listed(tmp_path, f"ssh-ed25519 {text}\n".encode()) == [fp("A")]
    spare = text[:-3] + chr(ord(text[-3]) + 1) + "=="
    for bad in (spare, text[:-2], text + "=="):
        assert listed(tmp_path, f"ssh-ed25519 {bad}\n".encode()) == [], bad


def test_a_line_whose_type_disagrees_with_its_data_grants_nothing(tmp_path):
    assert listed(tmp_path, f"ssh-rsa {blob('A')}\n".encode()) == []
    assert listed(tmp_path, f"ecdsa-sha2-nistp256 {blob('A')}\n".encode()) == []


# What the API accepts: exact, one line, options only when allowed and understood.


@pytest.mark.parametrize(
    "line",
    [
        f'command="echo \\"hi there\\"" ssh-ed25519 {blob("A")} c',
        f'restrict,permitopen="localhost:8888",permitlisten="8080",tunnel="1" '
        f"ssh-ed25519 {blob('A')}",
        f'environment="A=1",environment="B=2",expiry-time="20991231235959Z" '
        f"ssh-ed25519 {blob('A')}",
        f'from="127.0.0.1,::1",no-port-forwarding ssh-ed25519 {blob("A")}',
    ],
)
def test_options_sshd_understands_are_accepted(line):
    key = grammar.parse_key(line, allow_options=True)
    assert key.fingerprint == fp("A")
    assert key.line == line


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"unknown-option ssh-ed25519 {blob('A')}",
         "unknown key option at 'unknown-option ssh-ed25519 AAA'; sshd skips such a line"),
        (f'command="a",command="b" ssh-ed25519 {blob("A")}',
         'more than one "command" option; sshd skips a line with such options'),
        (f'expiry-time="2099013" ssh-ed25519 {blob("A")}',
         "expiry-time='2099013' is not YYYYMMDD[HHMM[SS]][Z]; sshd skips a line with such "
         "options"),
        (f'expiry-time="20991301" ssh-ed25519 {blob("A")}',
         "expiry-time='20991301' is not YYYYMMDD[HHMM[SS]][Z]; sshd skips a line with such "
         "options"),
        (f'permitopen="localhost" ssh-ed25519 {blob("A")}',
         "permitopen='localhost' is not host:port; sshd skips a line with such options"),
        (f'tunnel="+1" ssh-ed25519 {blob("A")}',
         "tunnel='+1' is not a device number or any; sshd skips a line with such options"),
        (f'command="echo ssh-ed25519 {blob("A")}',
         "the options open a double quote that is never closed"),
        (f"\vssh-ed25519 {blob('A')}",
         "'\\x0bssh-ed25519' is not a supported key type; give a public key line such as "
         "the content of ~/.ssh/id_ed25519.pub"),
        (f"# ssh-ed25519 {blob('A')}",
         "the line is a comment, which sshd skips; give a public key line such as the "
         "content of ~/.ssh/id_ed25519.pub"),
        (f"ssh-ed25519 {blob('A')} \ud800",
         "the key line is not valid Unicode (it holds the lone surrogate \\ud800)"),
    ],
)  # fmt: skip
def test_lines_the_api_refuses_with_the_reason(line, message):
    with pytest.raises(BadKeyError) as error:
        grammar.parse_key(line, allow_options=True)
    assert str(error.value) == message


def test_the_api_reads_the_environment_trick_as_sshd_does():
    """The key is C (B is inside the environment value), and the options say so."""
    line = f'environment="X=\\" ssh-ed25519 {blob("B")} \\"" ssh-ed25519 {blob("C")} me'
    key = grammar.parse_key(line, allow_options=True)
    assert key.fingerprint == fp("C")
    assert key.options == f'environment="X=\\" ssh-ed25519 {blob("B")} \\""'
    with pytest.raises(BadKeyError) as error:
        grammar.parse_key(line)
    assert str(error.value).startswith("the line starts with options (environment=")


def test_printable_escapes_what_could_forge_a_log_line():
    text = "me\x1b[31m\nFAKE LOG LINE\u2028x\t\udce9 café"
    assert grammar.escaped(text) == "me\\x1b[31m\\nFAKE LOG LINE\\u2028x\\t\\udce9 café"


def test_a_certificate_authority_line_does_not_count_as_the_key(tmp_path):
    """sshd lets certificates signed by a cert-authority key in, never the key
    itself: adding the key as a plain key is not refused as "already there"."""
    path = tmp_path / "authorized_keys"
    path.write_text(f"cert-authority {K['A'].line()}\n")
    (listed_key,) = edits.read_keys(str(path))
    assert listed_key.cert_authority
    assert listed_key.options == "cert-authority"
    assert edits.add_key(str(path), grammar.parse_key(K["A"].line("me")))
    assert not edits.add_key(str(path), grammar.parse_key(K["A"].line("again")))
    assert edits.remove_key(str(path), fp("A")) == 2
    assert path.read_text() == ""


# Values and counts as sshd 9.2 checks them: each row was checked against the
# real sshd (fuzzing/oracle.py). True: sshd lets the key in.
def repeat(option: str, count: int) -> str:
    return ",".join(option.format(n=n + 1) for n in range(count))


OPTION_CHECKS = [
    ("1025 environment names", repeat('environment="V{n}=1"', 1025), True),
    ("1026 environment names", repeat('environment="V{n}=1"', 1026), False),
    ("a name again after 1025", repeat('environment="V{n}=1"', 1025) + ',environment="V1=2"',
     False),
    ("one name 2000 times", repeat('environment="V=1{n}"', 2000), True),
    ("4097 permitopen", repeat('permitopen="h:{n}"', 4097), True),
    ("4098 permitopen", repeat('permitopen="h:{n}"', 4098), False),
    ("4098 permitlisten", repeat('permitlisten="{n}"', 4098), False),
    ("a service name for the port", 'permitopen="h:ssh"', True),
    ("an unknown service name", 'permitopen="h:nosuchservice"', False),
    ("an empty host", 'permitopen=":22"', True),
    ("a port strtoll reads", 'permitopen="h: +22"', True),
    ("a space after the port", 'permitopen="h:22 "', False),
    ("host/port", 'permitopen="h/22"', True),
    ("a bracketed address", 'permitopen="[::1]:22"', True),
    ("text after the bracket", 'permitopen="[::1]x:22"', False),
    ("no closing bracket", 'permitopen="[::1:22"', False),
    ("port 0", 'permitopen="h:0"', False),
    ("port 65536", 'permitopen="h:65536"', False),
    ("a bare port to open", 'permitopen="8888"', False),
    ("a bare port to listen on", 'permitlisten="8080"', True),
    ("a bracket without a port", 'permitlisten="[::1]"', False),
    ("a 1024-byte host", 'permitopen="' + "a" * 1024 + ':22"', True),
    ("a 1025-byte host", 'permitopen="' + "a" * 1025 + ':22"', False),
    ("tunnel +1", 'tunnel="+1"', True),
    ("tunnel -0", 'tunnel="-0"', True),
    ("tunnel ANY", 'tunnel="ANY"', True),
    ("the largest tunnel", 'tunnel="2147483645"', True),
    ("a tunnel too large", 'tunnel="2147483646"', False),
    ("a tunnel that is not a number", 'tunnel="x"', False),
    ("expiry at the epoch", 'expiry-time="19700101Z"', False),
    ("expiry that has passed", 'expiry-time="20000101Z"', False),
    ("expiry on February 31", 'expiry-time="20990231Z"', True),
    ("expiry with a space strptime skips", 'expiry-time="2099 123"', True),
    ("expiry at second 61", 'expiry-time="20991231235961Z"', True),
    ("expiry of letters", 'expiry-time="abcdefgh"', False),
    ("expiry 1969-12-31 23:59:61, one second after the epoch",
     'expiry-time="19691231235961Z"', False),
    ("principals on a plain key", 'principals="root"', False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "options", "granted"), OPTION_CHECKS, ids=[row[0] for row in OPTION_CHECKS]
)
def test_option_values_are_checked_as_sshd_checks_them(tmp_path, what, options, granted):
    data = f"{options} {K['A'].line()}\n".encode()
    assert listed(tmp_path, data) == ([fp("A")] if granted else [])


def test_principals_make_a_certificate_authority_line():
    key = grammar.parse_key(f'cert-authority,principals="me" {K["A"].line()}', allow_options=True)
    assert key.cert_authority


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('principals="me"',
         "principals= is for cert-authority lines; sshd refuses a plain key with it"),
        ('expiry-time="19700101Z"',
         "expiry-time='19700101Z' is not after 1970-01-01 00:00:00 UTC; sshd skips a line "
         "with such options"),
        ('expiry-time="20000101120000Z"',
         "the key expired at 2000-01-01 12:00:00 UTC (expiry-time); sshd refuses it"),
        ('permitlisten="[::1]:0"',
         "permitlisten='[::1]:0' is not host:port; sshd skips a line with such options"),
        ('permitopen="h:ssh"',  # sshd takes it; the API wants the port number
         "permitopen='h:ssh' is not host:port; sshd skips a line with such options"),
        ('tunnel="x"',
         "tunnel='x' is not a device number or any; sshd skips a line with such options"),
        ('permitopen="' + "a" * 1025 + ':22"',
         "permitopen: the host name is longer than 1024 bytes; sshd skips a line with such "
         "options"),
    ],
)  # fmt: skip
def test_the_api_refuses_options_that_keep_the_key_out(options, message):
    with pytest.raises(BadKeyError) as error:
        grammar.parse_key(f"{options} {K['A'].line()}", allow_options=True)
    assert str(error.value) == message
