"""An authorized_keys line, read exactly as sshd 9.x reads it (auth2-pubkeyfile.c,
sshkey.c, auth-options.c).

* A file is split at "\\n" only (not at "\\r" or other line breaks), and a
  line ends at its first NUL byte. Spaces and tabs, and only those, separate
  words; leading ones are skipped; an empty line or one starting with "#" is
  skipped.
* If the first word is exactly a key type name that sshd knows (certificate
  and DSA names included), the line is "type base64 [comment]". Otherwise
  the line starts with options, which end at the first space or tab outside
  double quotes (\\" never opens or closes quotes), and the key follows. The
  options must then parse as sshd parses them (known names,
  case-insensitive; values in double quotes; commas between them; the
  checks of auth-options.c on values and counts), or sshd skips the whole
  line. A line whose key sshd refuses on every use (principals= without
  cert-authority, an expiry-time that has passed) grants nothing either.
* The key data is read by blobs.py; the values sshd reads with the C library
  by libc.py.

Options that sshd applies when a key is used (from=, expiry-time, and
cert-authority, which lets in certificates signed by the key rather than the
key) are returned with the key, for the caller to show.

A key sent to the API (parse_key) must also be one line, of at most MAX_LINE
characters of valid Unicode, and its options must be fully understood
(strict): values that sshd reads with the C library (times, ports, tunnel
devices) must also be in their plain form. Lines already in a file are read
as sshd reads them (parse_file_line), the C library's part included.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import re
import time
from dataclasses import dataclass

from ..errors import BadKeyError
from .blobs import CANONICAL_NAMES, LINE_TYPES, b64decode, parse_blob
from .libc import ASCII_LOWER, C_SPACE, absolute_time, c_number, c_port

MAX_LINE = 16 * 1024
SPACE = " \t"  # what separates words for sshd

# Names sshd's key reader also knows (sshkey.c keyimpls), but whose keys can
# never log in here: DSA is not in sshd's default PubkeyAcceptedAlgorithms,
# and a certificate in authorized_keys never matches (certificates need
# cert-authority lines). Exact names, compared with the whole first word: a
# pattern could match a word that sshd reads as options (environment="A=x-cert-v01@openssh.com y").
NEVER_GRANTED = frozenset(
    (
        "ssh-dss",
        "ssh-xmss@openssh.com",
        *(
            name + "-cert-v01@openssh.com"
            for name in (
                "ssh-ed25519",
                "sk-ssh-ed25519",
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521",
                "sk-ecdsa-sha2-nistp256",
                "ssh-rsa",
                "rsa-sha2-256",
                "rsa-sha2-512",
                "ssh-dss",
                "ssh-xmss",
            )
        ),
    )
)
KEY_TYPE_NAMES = frozenset(LINE_TYPES) | NEVER_GRANTED  # every first word sshd reads as a key
ENV_MAX = 1024  # SSH_AUTHOPT_ENV_MAX: more different environment names are refused
PERMIT_MAX = 4096  # SSH_AUTHOPT_PERMIT_MAX, for permitopen and permitlisten each
NI_MAXHOST = 1025  # a permitopen/permitlisten host name is shorter
TUNNEL_MAX = 0x7FFFFFFD  # SSH_TUNID_MAX

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

    def as_json(self) -> dict[str, str]:
        return {
            "type": self.type,
            "key": self.blob,
            "comment": _text(self.comment),
            "options": _text(self.options),
            "fingerprint": self.fingerprint,
        }


def escaped(text: str) -> str:
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
        bad = escaped(line[error.start : error.end])
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
            f"the line starts with options ({escaped(key.options[:60])}); they are refused "
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


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _word_end(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] not in SPACE:
        pos += 1
    return pos


def _parse_line(text: str, strict: bool) -> PublicKey:
    """text starts at its first word; BadKeyError says why sshd would skip it.

    As sshd does (auth_check_authkey_line): read a key at the start of the
    line; if there is none, read the options (quotes honoured) and then a
    key. A first word that is a key type name (exactly) is always read as a
    key: if that fails, sshd takes the word for options, which no option
    name matches, and skips the line, so the first error is the reason."""
    first = text[: _word_end(text, 0)]
    if first in KEY_TYPE_NAMES:
        return _read_key(text, 0, "", text)
    end = _options_end(text)
    options = text[:end]
    key_start = _skip(text, end, SPACE)
    word = text[key_start : _word_end(text, key_start)]
    if word not in KEY_TYPE_NAMES:
        msg = f"{first[:40]!r} is not a supported key type; {EXAMPLE_LINE}"
        raise BadKeyError(msg)
    key = _read_key(text, key_start, options, text)
    parsed = _check_options(text, strict)
    _check_use(parsed)
    if "cert-authority" in parsed.seen:
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
    raw = b64decode(text[blob_start:blob_end])
    if raw is None:
        msg = f"the {word} key data is not valid base64 key data"
        raise BadKeyError(msg)
    family, curve, canonical = parse_blob(raw, word)
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


@dataclass
class _Options:
    """What sshauthopt_parse() keeps of the options while it reads them."""

    seen: set[str] = dataclasses.field(default_factory=set)  # names given, without "no-"
    environment: set[str] = dataclasses.field(default_factory=set)  # distinct names
    permits: dict[str, int] = dataclasses.field(default_factory=dict)  # permitopen/listen
    valid_before: int = 0  # the earliest expiry-time, 0 for none


def _check_options(text: str, strict: bool) -> _Options:
    """sshauthopt_parse(): the options at the start of text, as sshd reads them."""
    parsed = _Options()
    pos = 0
    while pos < len(text) and text[pos] not in SPACE:
        pos = _one_option(text, pos, parsed, strict)
        if pos >= len(text) or text[pos] in SPACE:
            break
        if text[pos] != ",":
            msg = f"unknown key option at {text[pos : pos + 30]!r}; sshd skips such a line"
            raise BadKeyError(msg)
        pos += 1
        if pos >= len(text):
            msg = "the options end with a comma"
            raise BadKeyError(msg)
    return parsed


def _check_use(parsed: _Options) -> None:
    """auth_authorise_keyopts(): the refusals that hold whenever the key is
    used, here (every connection comes from 127.0.0.1): a line with them lets
    nothing in, so it lists nothing, and the API does not add it."""
    problem = None
    if "principals" in parsed.seen and "cert-authority" not in parsed.seen:
        problem = "principals= is for cert-authority lines; sshd refuses a plain key with it"
    elif parsed.valid_before and parsed.valid_before < time.time():
        when = datetime.datetime.fromtimestamp(parsed.valid_before, datetime.timezone.utc)
        problem = f"the key expired at {when:%Y-%m-%d %H:%M:%S} UTC (expiry-time); sshd refuses it"
    if problem:
        raise BadKeyError(problem)


def _one_option(text: str, pos: int, parsed: _Options, strict: bool) -> int:
    """Read the option at pos, if sshd knows one there; where it ends."""
    for name, negatable in FLAG_OPTIONS:
        start = pos
        if negatable and text[start : start + 3].translate(ASCII_LOWER) == "no-":
            start += 3
        if text[start : start + len(name)].translate(ASCII_LOWER) == name:
            parsed.seen.add(name)
            return start + len(name)
    for name in VALUE_OPTIONS:
        end = pos + len(name)
        if text[pos:end].translate(ASCII_LOWER) == name and text[end : end + 1] == "=":
            value, after = _dequote(text, end + 1, name)
            _check_value(name, value, parsed, strict)
            parsed.seen.add(name)
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


def _check_value(name: str, value: str, parsed: _Options, strict: bool) -> None:
    """The checks sshd makes of an option's value when it reads the line; in
    strict mode (a line given to the API) values must also be in their plain
    form."""
    problem = None
    if name in SINGLE_OPTIONS and name in parsed.seen:
        problem = f'more than one "{name}" option'
    elif name == "environment":
        problem = _environment_problem(value, parsed)
    elif name == "expiry-time":
        problem = _expiry_problem(value, parsed, strict)
    elif name in ("permitopen", "permitlisten"):
        problem = _permit_problem(name, value, parsed, strict)
    elif name == "tunnel" and not _tunnel_device(value, strict):
        problem = f"tunnel={value[:20]!r} is not a device number or any"
    if problem:
        msg = f"{problem}; sshd skips a line with such options"
        raise BadKeyError(msg)


def _environment_problem(value: str, parsed: _Options) -> str | None:
    if len(parsed.environment) > ENV_MAX:  # checked before the value is read
        return f"more than {ENV_MAX + 1} different environment names"
    variable, equals, _ = value.partition("=")
    if not equals or not re.fullmatch(r"[A-Za-z0-9_]+", variable):
        return f"environment={value[:40]!r} is not NAME=value"
    parsed.environment.add(variable)  # the first value of a name is the one used
    return None


def _permit_problem(name: str, value: str, parsed: _Options, strict: bool) -> str | None:
    """handle_permit(): host:port (hpdelim2, a2port); permitlisten also takes a bare port."""
    count = parsed.permits.get(name, 0)
    if count > PERMIT_MAX:  # checked before the value is read
        return f"more than {PERMIT_MAX + 1} {name} options"
    if name == "permitlisten" and ":" not in value:
        value = "*:" + value
    problem = f"{name}={value[:60]!r} is not host:port"
    if value.startswith("["):
        close = value.find("]")
        if close < 0:
            return problem
        delimiter = close + 1
    else:
        found = re.search("[:/]", value)
        delimiter = found.start() if found else len(value)
    host, port = value[:delimiter], value[delimiter + 1 :]
    if delimiter >= len(value) or value[delimiter] not in ":/":
        return problem
    if len(host.encode("utf-8", "surrogateescape")) >= NI_MAXHOST:
        return f"{name}: the host name is longer than {NI_MAXHOST - 1} bytes"
    if port != "*" and c_port(port) <= 0:
        return problem
    if strict and not (
        host
        and (port == "*" or re.fullmatch("[0-9]{1,5}", port))
        and re.fullmatch(r"\[[^\]]+\]|[^:/\[\]]+", host)
    ):
        return problem
    parsed.permits[name] = count + 1
    return None


def _tunnel_device(value: str, strict: bool) -> bool:
    """a2tun(): "any" (in any case), or a device number up to SSH_TUNID_MAX."""
    if value.translate(ASCII_LOWER) == "any":
        return True
    if strict and not (value.isascii() and value.isdigit()):
        return False
    return c_number(value, 0, TUNNEL_MAX) is not None


def _expiry_problem(value: str, parsed: _Options, strict: bool) -> str | None:
    """parse_absolute_time(): YYYYMMDD[HHMM[SS]], UTC with Z or UTC after it,
    local time otherwise; sshd refuses a time that is not after 1970."""
    problem = f"expiry-time={value[:20]!r} is not YYYYMMDD[HHMM[SS]][Z]"
    seconds = absolute_time(value.encode("utf-8", "surrogateescape"))
    if seconds is None:
        return problem
    if seconds <= 0:
        return f"expiry-time={value[:20]!r} is not after 1970-01-01 00:00:00 UTC"
    if strict:  # sshd reads the digits with strptime(), which takes more than this
        digits = value
        if value[-1:] in ("z", "Z"):
            digits = value[:-1]
        elif value[-3:].translate(ASCII_LOWER) == "utc":
            digits = value[:-3]
        if not (digits.isascii() and digits.isdigit()):
            return problem
        try:
            datetime.datetime.strptime(digits, "%Y%m%d%H%M%S"[: len(digits) - 2])
        except ValueError:
            return problem
    if not parsed.valid_before or seconds < parsed.valid_before:
        parsed.valid_before = seconds
    return None


def is_fingerprint(text: str) -> bool:
    return re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", text) is not None
