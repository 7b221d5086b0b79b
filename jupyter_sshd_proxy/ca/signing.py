"""What the certificate authority decides, with no I/O but ssh-keygen runs.

The principal of a Hub user, the key ID, the validity asked for, the public
key a request may have signed, and ssh-keygen's command line that signs it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from jupyter_sshd_proxy_client.errors import BadKeyError
from jupyter_sshd_proxy_client.keys.grammar import NEVER_GRANTED, PublicKey, parse_key

PRINCIPAL_PREFIX = "hub:"
# Hub user names that can be a principal as they are: certificate principals
# are separated by commas on ssh-keygen's command line, and sshd reads an
# AuthorizedPrincipalsFile line's last word as its principal.
HUB_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,200}")
DEFAULT_VALIDITY = 12 * 3600
MAX_VALIDITY = 24 * 3600
# sshd takes RSA keys of 1024 bits (RequiredRSASize); a certificate lends a
# key the Hub's trust, so the authority asks for more.
RSA_MIN_BITS = 2048
BACKDATE = 300  # the certificate is valid from five minutes ago: clocks drift
# What a certificate lets its holder do, before the server's own sshd
# policy (c.SSHDProxy.policy) limits it further: the server decides.
EXTENSIONS = (
    "permit-pty",
    "permit-port-forwarding",
    "permit-agent-forwarding",
    "permit-user-rc",
)
DURATION = re.compile(r"(\d+)([smhd]?)")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class SigningError(ValueError):
    """A request the authority refuses; str() is one line for the JSON answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def principal_for(hub_user: str) -> str:
    """The certificate principal of a Hub user: hub:<name>."""
    if not HUB_NAME.fullmatch(hub_user):
        msg = (
            f"the Hub user name {hub_user!r} cannot be an SSH certificate principal "
            "(letters, digits and . _ @ + - only, at most 200); ask the Hub's operator "
            "to normalise user names"
        )
        raise SigningError(msg, 403)
    return PRINCIPAL_PREFIX + hub_user


def parse_duration(text: str, what: str) -> int:
    """Seconds from "3600", "90m", "12h" or "1d"."""
    match = DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) <= 0:
        msg = f"{what}={text!r} is not a duration; use e.g. 12h, 90m, 3600s or 1d"
        raise ValueError(msg)
    return int(match.group(1)) * UNITS[match.group(2)]


def validity(asked: object, default: int, maximum: int) -> int:
    """The validity in seconds a request gets: what it asks (at most maximum)
    or the default."""
    if asked is None:
        return min(default, maximum)
    if isinstance(asked, bool) or not isinstance(asked, int) or asked <= 0:
        msg = f"validity_seconds={asked!r} is not a positive whole number of seconds"
        raise SigningError(msg)
    if asked > maximum:
        msg = (
            f"validity_seconds={asked} is more than this authority gives "
            f"({maximum} seconds); ask for {maximum} or less"
        )
        raise SigningError(msg)
    return asked


def public_key(line: object) -> PublicKey:
    """The user's public key line, as this package's keys grammar reads it: a
    plain key (no options, no certificate, no DSA)."""
    if not isinstance(line, str):
        msg = "public_key must be a string: the content of your ~/.ssh/id_ed25519.pub"
        raise SigningError(msg)
    if line.endswith("\n"):  # as a .pub file holds it
        line = line[:-1].removesuffix("\r")
    try:
        key = parse_key(line)
    except BadKeyError as error:
        msg = f"public_key refused: {error}"
        raise SigningError(msg) from None
    if key.type in NEVER_GRANTED or key.type.endswith("-cert-v01@openssh.com"):
        msg = f"public_key refused: a {key.type} key cannot be certified; use an ed25519 key"
        raise SigningError(msg)
    return key


def key_id(hub_user: str, key: PublicKey) -> str:
    """The certificate's key ID: who and which key, as sshd logs it."""
    return f"{hub_user} {key.fingerprint}"


def sign_argv(
    ssh_keygen: str, ca_key: str, hub_user: str, key: PublicKey, seconds: int, serial: int,
    public_key_path: str,
) -> list[str]:  # fmt: skip
    """ssh-keygen's command line that certifies public_key_path."""
    extensions = [word for name in EXTENSIONS for word in ("-O", name)]
    return [
        ssh_keygen, "-q", "-s", ca_key,
        "-I", key_id(hub_user, key),
        "-n", principal_for(hub_user),
        "-V", f"-{BACKDATE}s:+{seconds}s",
        "-z", str(serial),
        "-O", "clear", *extensions,
        public_key_path,
    ]  # fmt: skip


@dataclass(frozen=True)
class Fingerprint:
    bits: int
    fingerprint: str
    type: str


def fingerprint(ssh_keygen: str, path: str) -> Fingerprint:
    """ssh-keygen -l of a key file: refuses what ssh-keygen cannot read."""
    result = subprocess.run(
        [ssh_keygen, "-l", "-E", "sha256", "-f", path],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    match = re.fullmatch(r"(\d+) (SHA256:\S+) .*\((\S+)\)\n?", result.stdout)
    if result.returncode != 0 or not match:
        msg = "public_key refused: ssh-keygen cannot read it as a public key"
        raise SigningError(msg)
    return Fingerprint(int(match.group(1)), match.group(2), match.group(3))
