"""The laptop's SSH certificate from the Hub's certificate authority (ssh-ca).

Against a Hub that runs the authority (its keys answer at
<hub>/services/ssh-ca/keys), config-ssh uploads no key: the Hub's block gets

    Match host NAME,NAME.* exec "python -m jupyter_sshd_proxy_client certificate ... HUB"
        CertificateFile ~/.ssh/jupyter-sshd-proxy/NAME-cert.pub

ssh runs a Match's exec while it reads its configuration, before it loads
identities and certificates and before the ProxyCommand starts: so the
certificate the connection offers is the one the command has just checked
or renewed. The command renews when the certificate is missing, is not for
this key, user or authority, or has less than a quarter of its life left
(and at least RENEW_MARGIN seconds); it fails (exit 1, one line on stderr,
no CertificateFile) when no valid certificate can be had. A certificate due
for renewal but still valid is kept, with one line, when the authority
cannot renew it within RENEW_TIMEOUT seconds an answer.

Everything the authority answers is untrusted: the certificate is written
(atomically) only after `ssh-keygen -L` shows a user certificate of our key,
signed by a key the authority publishes, for the principal hub:<our Hub
user> only, valid now. The token is read from its mode-600 file, never argv.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ClientError, ConfigSSHError, HubError, UntrustedAnswer
from .files import write_atomically
from .keys.grammar import PublicKey, parse_key
from .rest import ServerAPI, explain
from .untrusted import shown

SERVICE = "ssh-ca"
PRINCIPAL_PREFIX = "hub:"
RENEW_MARGIN = 60  # seconds: never keep a certificate that ends sooner
# Seconds for the authority's keys and for its certificate; when a
# certificate valid now is on hand (the Match exec holds ssh meanwhile),
# RENEW_TIMEOUT for each.
TIMEOUTS = (10, 30)
RENEW_TIMEOUT = 5
MAX_LINE = 16 * 1024
# The labels of `ssh-keygen -L` that parse_listing reads: each is printed
# once, at the start of its line. The key ID and the principals are printed
# as they are, newlines included, so a certificate whose key ID or principal
# holds "\n        Type: ..." prints a label twice: it is refused.
LISTING_LABELS = (
    "Type", "Public key", "Signing CA", "Key ID", "Serial", "Valid", "Principals",
    "Critical Options", "Extensions",
)  # fmt: skip


def service_scope(service: str = SERVICE) -> str:
    """The scope a token needs to ask the authority for a certificate."""
    return f"access:services!service={service}"


def authority_keys(
    base: str,
    ca_file: str | None,
    service: str = SERVICE,
    timeout: float = 10,
    unreachable_ok: bool = True,
) -> list[PublicKey]:
    """The authority's public keys, or [] when the Hub runs none (no token
    needed); a Hub that cannot be reached runs none, unless not unreachable_ok
    (then its APIError or TLSError is raised)."""
    api = ServerAPI(f"{base}services/{service}/", "", ca_file=ca_file, timeout=timeout)
    try:
        code, body = api.call("GET", "keys")
    except ClientError:
        if not unreachable_ok:
            raise
        return []
    if code != 200 or not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        return []
    keys = []
    for line in body["keys"][:8]:
        try:
            keys.append(parse_key(line) if isinstance(line, str) else None)
        except ValueError:
            keys.append(None)
    if not keys or None in keys:
        msg = f"the Hub's certificate authority at {base}services/{service}/keys sent a bad key"
        raise UntrustedAnswer(msg)
    return [key for key in keys if key is not None]


@dataclass(frozen=True)
class Certificate:
    """What `ssh-keygen -L` says of a certificate."""

    kind: str  # "user certificate"
    key_fingerprint: str
    ca_fingerprint: str
    principals: tuple[str, ...]
    valid_after: int  # seconds since the epoch
    valid_before: int
    serial: int


def read_certificate(path: str) -> Certificate | None:
    """The certificate in path as ssh-keygen reads it; None if it cannot."""
    try:
        result = subprocess.run(
            ["ssh-keygen", "-L", "-f", path], capture_output=True, text=True, timeout=30,
            check=False, stdin=subprocess.DEVNULL, env={**os.environ, "TZ": "UTC"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_listing(result.stdout) if result.returncode == 0 else None


def parse_listing(text: str) -> Certificate | None:
    """`ssh-keygen -L` output (run with TZ=UTC), or None if it is not a certificate's."""
    found = re.findall(r"(?m)^\s+([A-Za-z ]+): ?(.*)$", text)
    labels = [label for label, _ in found]
    if any(labels.count(label) != 1 for label in LISTING_LABELS):
        return None  # a label forged by the key ID or a principal, or one missing
    fields = dict(found)
    kind = re.fullmatch(
        r"\S+-cert-v01@openssh\.com (user|host) certificate", fields.get("Type", "")
    )
    key = re.fullmatch(r"\S+ (SHA256:[A-Za-z0-9+/]{43})", fields.get("Public key", ""))
    ca = re.match(r"\S+ (SHA256:[A-Za-z0-9+/]{43})", fields.get("Signing CA", ""))
    valid = re.fullmatch(r"from (\S+) to (\S+)", fields.get("Valid", ""))
    serial = fields.get("Serial", "")
    principals = re.search(r"(?ms)^\s+Principals: ?\n(.*?)^\s+Critical Options:", text)
    if not (kind and key and ca and valid and serial.isdigit() and principals):
        return None
    try:
        after, before = (
            calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) for stamp in valid.groups()
        )
    except ValueError:  # "forever": never ours
        return None
    return Certificate(
        kind=f"{kind.group(1)} certificate",
        key_fingerprint=key.group(1),
        ca_fingerprint=ca.group(1),
        principals=tuple(principals.group(1).split()),
        valid_after=after,
        valid_before=before,
        serial=int(serial),
    )


def problem(
    cert: Certificate | None, key: PublicKey, user: str, cas: list[PublicKey], now: float
) -> str | None:
    """Why cert is not one to use now, or None."""
    if cert is None:
        return "it is not a certificate ssh-keygen can read"
    if cert.kind != "user certificate":
        return f"it is a {cert.kind}, not a user certificate"
    if cert.key_fingerprint != key.fingerprint:
        return f"it certifies another key ({cert.key_fingerprint}), not {key.fingerprint}"
    if cas and cert.ca_fingerprint not in {ca.fingerprint for ca in cas}:
        return f"it is signed by {cert.ca_fingerprint}, a key the authority does not publish"
    if cert.principals != (PRINCIPAL_PREFIX + user,):
        return f"it names {shown(' '.join(cert.principals))}, not only {PRINCIPAL_PREFIX}{user}"
    if not cert.valid_after <= now < cert.valid_before:
        return "it is not valid now"
    return None


def needs_renewal(cert: Certificate, now: float) -> bool:
    """Less than a quarter of its life (and at least RENEW_MARGIN seconds) left."""
    margin = max(RENEW_MARGIN, (cert.valid_before - cert.valid_after) // 4)
    return cert.valid_before - now < margin


def public_key(identity: str) -> PublicKey:
    try:
        with open(identity + ".pub", encoding="utf-8") as stream:
            return parse_key(stream.read(MAX_LINE).strip())
    except (OSError, ValueError) as error:
        msg = f"cannot read the public key {identity}.pub: {error}; run config-ssh again"
        raise ConfigSSHError(msg) from None


def ensure(
    base: str,
    user: str,
    token: str,
    identity: str,
    certificate: str,
    ca_file: str | None = None,
    service: str = SERVICE,
    now: float | None = None,
    keep_valid: Callable[[str], None] | None = None,
) -> str:
    """A certificate valid now in `certificate`: "kept" or "renewed".

    With keep_valid (the Match exec's), a certificate that is due for renewal
    but still valid is kept when the authority cannot renew it (a Hub down
    or stalled: each answer then has RENEW_TIMEOUT seconds), and keep_valid
    is told why in one line: ssh still offers a certificate that works."""
    key = public_key(identity)
    now = time.time() if now is None else now
    current = read_certificate(certificate) if os.path.exists(certificate) else None
    usable = current is not None and problem(current, key, user, [], now) is None
    if usable and current is not None and not needs_renewal(current, now):
        return "kept"
    if not (usable and current is not None and keep_valid is not None):
        _renew(base, user, token, key, certificate, ca_file, service, TIMEOUTS)
        return "renewed"
    try:
        _renew(base, user, token, key, certificate, ca_file, service, (RENEW_TIMEOUT,) * 2)
    except ClientError as error:
        until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(current.valid_before))
        keep_valid(
            f"cannot renew the certificate {certificate}: {error}; the current one is "
            f"valid until {until} UTC"
        )
        return "kept"
    return "renewed"


def _renew(
    base: str,
    user: str,
    token: str,
    key: PublicKey,
    certificate: str,
    ca_file: str | None,
    service: str,
    timeouts: tuple[float, float],
) -> None:
    """Ask the authority to certify key; write the certificate once checked."""
    cas = authority_keys(base, ca_file, service, timeouts[0], unreachable_ok=False)
    if not cas:
        msg = f"the Hub at {base} answers no certificate authority at services/{service}/"
        raise HubError(msg)
    api = ServerAPI(f"{base}services/{service}/", token, ca_file=ca_file, timeout=timeouts[1])
    code, body = api.call("POST", "sign", {"public_key": f"{key.type} {key.blob}"})
    if code != 200:
        raise HubError(
            explain(code, f"{base}services/{service}/sign", "certificate authority", body)
        )
    line = body.get("certificate") if isinstance(body, dict) else None
    if not isinstance(line, str) or len(line) > MAX_LINE or not line.isprintable():
        msg = f"the Hub's certificate authority sent a certificate that is not one: {shown(line)}"
        raise UntrustedAnswer(msg)
    directory = os.path.dirname(os.path.abspath(certificate))
    with tempfile.TemporaryDirectory(dir=directory) as work:
        candidate = os.path.join(work, "cert.pub")
        with open(candidate, "w", encoding="utf-8") as stream:
            stream.write(line + "\n")
        why = problem(read_certificate(candidate), key, user, cas, time.time())
    if why:
        msg = f"the Hub's certificate authority sent a certificate that is refused: {why}"
        raise UntrustedAnswer(msg)
    write_atomically(certificate, (line + "\n").encode(), 0o600)


def read_token(token_file: str) -> str:
    """The token in token_file, checked as the ProxyCommand checks it (a regular
    file of ours, mode 600, visible ASCII only), and registered as a secret:
    never printed, whatever fails later."""
    from .proxy_command import read_token as checked_token

    with contextlib.suppress(OSError):  # (checked_token says why it cannot be read)
        if os.path.getsize(token_file) == 0:
            msg = f"the token file {token_file} is empty; run config-ssh again"
            raise ConfigSSHError(msg)
    return checked_token(token_file)


def main_certificate(args: argparse.Namespace) -> int:
    """`jupyter-sshd-proxy certificate HUB_URL ...`, as the Match exec line runs it."""
    from .hub_urls import hub_url
    from .untrusted import printable

    def keep_valid(why: str) -> None:
        print(f"jupyter-sshd-proxy: {printable(why, 2000)}", file=sys.stderr)

    ensure(
        hub_url(args.url), args.user, read_token(args.token_file), args.identity,
        args.certificate, args.ca_file, args.service, keep_valid=keep_valid,
    )  # fmt: skip
    return 0


def match_lines(name: str, argv: list[str], certificate: str) -> list[str]:
    """The Match lines of the Hub's block that renew and offer the certificate."""
    from .ssh_files import _command_line, _config_value

    command = _command_line(argv)
    if '"' in command:
        msg = f"the certificate command {command!r} would need a double quote; use other paths"
        raise ValueError(msg)
    return [
        f'Match host "{name},{name}.*" exec "{command}"',
        f"    CertificateFile {_config_value(certificate, 'the certificate file')}",
    ]


def with_certificate(block: str, lines: list[str]) -> str:
    """The Hub's block with the Match lines before its first Host stanza."""
    head, sep, rest = block.partition("\nHost ")
    return head + "\n" + "\n".join(lines) + sep + rest
