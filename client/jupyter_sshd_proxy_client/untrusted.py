"""What a server answers, checked before the laptop uses it.

The server at the other end may be compromised, or an attacker's: a user
name with a newline in it would add lines of its own choosing to
~/.ssh/config (a ProxyCommand runs on the laptop), a host key line starting
with @cert-authority would undermine the pinning of every other host in the
shared known_hosts file, and an escape sequence printed on the terminal can
retitle it, hide text or worse. So:

* a value that goes into a file must match a strict pattern, or it is refused
  with UntrustedAnswer, and nothing is written;
* a string that is printed loses its control characters (printable()), and
  any secret we know (the token, registered by read_token with secret()) is
  shown as <token>: a proxy or an error page that echoes the Authorization
  header must not put the token on the terminal, in CI logs or screenshots.

Only `re` is imported at the top: printable() runs on every error of the
ProxyCommand, whose start-up time is the user's wait. For the same reason
the patterns are compiled at their first use (Pattern), not on import: the
ProxyCommand imports this module on every connection, and a connection
that opens uses none of them (compiling them took 0.6 ms of its start).
"""

from __future__ import annotations

import contextlib
import re

from .errors import UntrustedAnswer


class Pattern:
    """A regular expression compiled at its first use (and kept in re's cache)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def fullmatch(self, text: str) -> re.Match[str] | None:
        return re.fullmatch(self.pattern, text)

    def sub(self, replacement: str, text: str) -> str:
        return re.sub(self.pattern, replacement, text)


SUSPICIOUS = "is that URL really your Jupyter server?"
# POSIX's portable user names (letters, digits, '.', '_', '-', not starting
# with '-'), at most 32 characters like useradd's: nothing ssh_config or a
# shell would read as more than a name.
USER_NAME = Pattern(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}")
USER_NAME_RULE = "letters, digits, '.', '_' and '-', at most 32 characters"
MAX_HOST_KEYS = 16  # a server has two or three
# The only line we write into known_hosts, and read back from it: ALIAS TYPE BASE64.
KNOWN_HOSTS_LINE = Pattern(r"[A-Za-z0-9][A-Za-z0-9._-]* [a-z][a-z0-9@.-]* [A-Za-z0-9+/]+={0,2}\n")
# C0 and C1 controls, DEL, and the Unicode marks that reorder text on screen.
_CONTROL = Pattern("[\x00-\x08\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]+")
_LINE_BREAKS = Pattern("[\t\n\x0b\x0c\r\x85\u2028\u2029]+")
_SECRETS: set[str] = set()  # what printable() and shown() never show


def secret(value: str) -> str:
    """Register value (a token) so that printable() and shown() print <token> in
    its place; returns value."""
    if value:
        _SECRETS.add(value)
    return value


def _hide_secrets(text: str) -> str:
    for value in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(value, "<token>")
    return text


def printable(text: object, limit: int = 500) -> str:
    """text for the terminal, on one line: control characters removed, line
    breaks and tabs made spaces, secrets as <token>, at most limit characters."""
    text = _hide_secrets(_CONTROL.sub("", _LINE_BREAKS.sub(" ", str(text))).strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: object, limit: int = 60) -> str:
    """A short, escaped picture of a refused value, for the one-line error."""
    text = _hide_secrets(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def refuse(base: str, what: str, value: object) -> UntrustedAnswer:
    return UntrustedAnswer(f"{base} sent {what}: {shown(value)}; {SUSPICIOUS}")


def user_name(status: dict[str, object], base: str) -> str:
    """status["user"] of the sshd-proxy status answer, if it is a portable user name."""
    user = status.get("user")
    if not isinstance(user, str) or not USER_NAME.fullmatch(user):
        raise refuse(base, f"a user name that is not a portable one ({USER_NAME_RULE})", user)
    return user


def key_list(
    answer: dict[str, object], base: str, what: str, most: int = 1000
) -> list[dict[str, object]]:
    """answer["keys"]: a list of at most `most` JSON objects."""
    found = answer.get("keys")
    if (
        not isinstance(found, list)
        or len(found) > most
        or not all(isinstance(entry, dict) for entry in found)
    ):
        article = "an" if what[0] in "aeiou" else "a"
        expected = f'a list of at most {most} JSON objects as "keys"'
        raise refuse(base, f"{article} {what} answer without {expected}", found)
    return found


def host_keys(answer: dict[str, object], base: str) -> list[tuple[str, str]]:
    """The host keys of a host-keys answer as (type, base64), each one checked
    like an authorized key: a known type and key data of that type, nothing else."""
    from .errors import BadKeyError
    from .keys.grammar import parse_key  # not on the ProxyCommand's path

    checked = []
    for number, entry in enumerate(key_list(answer, base, "host-keys", MAX_HOST_KEYS), 1):
        kind, blob = entry.get("type"), entry.get("key")
        key = None
        if isinstance(kind, str) and isinstance(blob, str):
            with contextlib.suppress(BadKeyError):
                key = parse_key(f"{kind} {blob}")
        if key is None or (key.type, key.blob, key.options, key.comment) != (kind, blob, "", ""):
            what = f"host key {number} that is not a public key of a known type"
            raise refuse(base, what, entry)
        checked.append((key.type, key.blob))  # equal to (kind, blob), and typed
    if not checked:
        msg = f"{base} has no host keys to pin; see the Jupyter server's log"
        raise UntrustedAnswer(msg)
    return checked
