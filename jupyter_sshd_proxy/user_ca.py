"""This server's trust in the Hub's certificate authority, for its own Hub user only.

With c.SSHDProxy.trusted_user_ca_keys set (a URL of the authority's keys
endpoint, or a file of public keys), sshd gets two files in its private
state directory, rewritten whenever sshd is prepared:

    trusted_user_ca_keys     TrustedUserCAKeys: the authority's public keys
    authorized_principals    AuthorizedPrincipalsFile: one line, hub:<JUPYTERHUB_USER>

so sshd takes a certificate signed by the authority only when it names this
server's Hub user, whatever unix account the server runs as. Everything the
authority answers is untrusted: at most MAX_KEYS plain public keys, each read
with the keys grammar; anything else, an unreachable authority, or no
JUPYTERHUB_USER, and certificates are not trusted at all (fail closed) while
authorized_keys works as before. One log line says why, and so does the
status API ("certificates").
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jupyter_sshd_proxy_client.errors import BadKeyError
from jupyter_sshd_proxy_client.files import write_atomically
from jupyter_sshd_proxy_client.keys.grammar import NEVER_GRANTED, PublicKey, parse_key

from .ca.signing import SigningError, principal_for

MAX_ANSWER = 64 * 1024  # bytes of the authority's answer
MAX_KEYS = 8
FETCH_TIMEOUT = 5.0


class NotTrusted(Exception):
    """Why certificates are not trusted now; str() is one line."""


@dataclass
class Trust:
    """What the status API tells of certificates."""

    source: str
    trusted: bool = False
    principal: str | None = None
    ca_fingerprints: list[str] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "trusted": self.trusted,
            "principal": self.principal,
            "ca_fingerprints": self.ca_fingerprints,
            "error": self.error,
        }


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def parse_keys(lines: Sequence[object], where: str) -> list[PublicKey]:
    """The authority's public keys, each a plain key line; NotTrusted otherwise."""
    if not lines:
        msg = f"{where} lists no key"
        raise NotTrusted(msg)
    if len(lines) > MAX_KEYS:
        msg = f"{where} lists {len(lines)} keys, more than {MAX_KEYS}"
        raise NotTrusted(msg)
    keys = []
    for line in lines:
        if not isinstance(line, str):
            msg = f"{where} lists a key that is not a string"
            raise NotTrusted(msg)
        try:
            key = parse_key(line)
        except BadKeyError as error:
            msg = f"{where} lists a key that is refused: {error}"
            raise NotTrusted(msg) from None
        if key.type in NEVER_GRANTED:
            msg = f"{where} lists a {key.type} key, which cannot be a certificate authority"
            raise NotTrusted(msg)
        keys.append(key)
    return keys


def answer_keys(body: bytes, url: str) -> list[PublicKey]:
    """The keys in the authority's JSON answer ({"keys": ["ssh-ed25519 ...", ...]})."""
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        msg = f"{url} did not answer JSON"
        raise NotTrusted(msg) from None
    if not isinstance(answer, dict) or not isinstance(answer.get("keys"), list):
        msg = f'{url} answered no "keys" list'
        raise NotTrusted(msg)
    return parse_keys(answer["keys"], url)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """The keys decide who logs in: they come from the URL the operator gave,
    never from wherever its answer points (another host, http:// after
    https://, ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        fp.close()
        msg = (
            f"{req.full_url} redirects ({code}) to {newurl}; give that URL itself "
            "(c.SSHDProxy.trusted_user_ca_keys): the keys are never fetched from a redirect"
        )
        raise NotTrusted(msg)


def fetch_keys(url: str, timeout: float = FETCH_TIMEOUT) -> list[PublicKey]:
    """GET the authority's public keys (no token: they are public)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    opener = urllib.request.build_opener(NoRedirect)
    # timeout bounds each read; the deadline bounds them all: sshd is prepared
    # in the Jupyter server's event loop, and an answer that trickles must
    # not hold it.
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    try:
        with opener.open(request, timeout=timeout) as response:
            while size <= MAX_ANSWER:
                if time.monotonic() > deadline:
                    msg = (
                        f"cannot fetch the certificate authority's keys from {url}: "
                        f"no whole answer within {timeout:g}s"
                    )
                    raise NotTrusted(msg)
                chunk = response.read1(MAX_ANSWER + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except OSError as error:
        reason = getattr(error, "reason", None) or error
        msg = f"cannot fetch the certificate authority's keys from {url}: {reason}"
        raise NotTrusted(msg) from None
    body = b"".join(chunks)
    if len(body) > MAX_ANSWER:
        msg = f"{url} answered more than {MAX_ANSWER} bytes"
        raise NotTrusted(msg)
    return answer_keys(body, url)


def read_keys(path: str) -> list[PublicKey]:
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read(MAX_ANSWER + 1)
    except (OSError, UnicodeDecodeError) as error:
        msg = f"cannot read the certificate authority's keys from {path}: {error}"
        raise NotTrusted(msg) from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return parse_keys(lines, path)


def prepare(source: str, hub_user: str | None, state_dir: str) -> tuple[list[str], Trust]:
    """sshd options that trust the authority for hub_user, with the files they
    name written in state_dir; no options when that cannot be done."""
    trust = Trust(source)
    try:
        if not hub_user:
            msg = "JUPYTERHUB_USER is not set, so no Hub user's certificate can be trusted"
            raise NotTrusted(msg)
        try:
            trust.principal = principal_for(hub_user)
        except SigningError as error:
            raise NotTrusted(str(error)) from None
        keys = fetch_keys(source) if is_url(source) else read_keys(source)
    except NotTrusted as error:
        trust.error = f"SSH certificates are not trusted: {error}; authorized_keys still work"
        return [], trust
    keys_path = os.path.join(state_dir, "trusted_user_ca_keys")
    principals_path = os.path.join(state_dir, "authorized_principals")
    write_atomically(keys_path, "".join(f"{k.type} {k.blob}\n" for k in keys).encode(), 0o600)
    write_atomically(principals_path, f"{trust.principal}\n".encode(), 0o600)
    trust.trusted = True
    trust.ca_fingerprints = [key.fingerprint for key in keys]
    return [
        f"TrustedUserCAKeys {quote(keys_path)}",
        f"AuthorizedPrincipalsFile {quote(principals_path)}",
    ], trust


def quote(path: str) -> str:
    """A path for sshd_config: quoted, and its % doubled (sshd expands tokens)."""
    path = path.replace("%", "%%")
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
