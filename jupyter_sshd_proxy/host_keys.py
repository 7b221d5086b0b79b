"""The host keys sshd presents, and their public halves as sshd presents them.

sshd presents the public half of each HostKey's private key. A .pub file
beside it that says otherwise is not what clients see: sshd logs "Public key
for ... does not match private key" and presents the private key's own. So
the public keys served to clients (to pin them) are derived from the private
keys with ssh-keygen -y, never read from the .pub files; ours are rewritten
when they do not match, so that what an operator reads there is true too.

Besides ours (ed25519 and RSA, made once and kept: sshd.ensure_host_keys),
the original jupyter-sshd-proxy's host key, ~/.ssh/jupyter_sshd_hostkey,
where it exists: the original made it on its first start with ssh-keygen's
default type (RSA before OpenSSH 9.5, ed25519 since), and every laptop that
connected has it in known_hosts. It comes first. In the key exchange sshd
presents the first key of each type, so

    legacy RSA      -> presented: legacy RSA, our ed25519
    legacy ed25519  -> presented: legacy ed25519, our RSA

and a client that pinned it prefers its type (ssh orders its host key
algorithms by the keys it knows for the host) and is served it. sshd still
holds ours of that type: after a login it tells the client every key it
holds and proves it has them (ssh's UpdateHostKeys), so laptops learn all of
ours and keep connecting once the legacy key is retired. It is never made
here.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass

from jupyter_sshd_proxy_client.errors import BadKeyError, PreflightError
from jupyter_sshd_proxy_client.files import write_atomically
from jupyter_sshd_proxy_client.keys import grammar


@dataclass(frozen=True)
class HostKey:
    path: str  # the private key, as sshd's HostKey names it
    public: grammar.PublicKey  # its public half, what sshd presents
    legacy: bool = False  # the original jupyter-sshd-proxy's


def public_half(ssh_keygen: str, path: str, fix: str) -> grammar.PublicKey:
    """The public key of the private key at path, as sshd derives it; fix says
    what to do when it cannot be read."""
    result = subprocess.run(
        [ssh_keygen, "-y", "-P", "", "-f", path],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip("@ \n")]
    reason = grammar.escaped(lines[-1]) if lines else f"exit status {result.returncode}"
    if result.returncode == 0:
        try:
            return grammar.parse_key(result.stdout.strip())
        except BadKeyError as error:
            reason = str(error)
    msg = f"host key {path} cannot be read ({reason}); {fix}"
    raise PreflightError(msg)


def our_host_keys(ssh_keygen: str, paths: list[str], log: logging.Logger) -> list[HostKey]:
    """Our host keys (made by sshd.ensure_host_keys), each with its public half;
    a .pub that does not match its private key is rewritten from it."""
    found = []
    for path in paths:
        fix = (
            f"restore it, or delete {path} and {path}.pub to make a new one "
            "(clients then pin it again: jupyter-sshd-proxy config-ssh)"
        )
        public = public_half(ssh_keygen, path, fix)
        if _repair_public_file(path, public):
            log.warning(
                "jupyter-sshd-proxy: %s.pub was not the public key of %s (which sshd presents); "
                "rewritten from it",
                path,
                path,
            )
        found.append(HostKey(path, public))
    return found


def _repair_public_file(path: str, public: grammar.PublicKey) -> bool:
    """Make path.pub hold public if it does not; True if it was rewritten."""
    try:
        with open(path + ".pub", "rb") as stream:
            words = stream.read(grammar.MAX_LINE + 1).split()[:2]
    except OSError:
        words = []
    if words == [public.type.encode(), public.blob.encode()]:
        return False
    line = " ".join(word for word in (public.type, public.blob, public.comment) if word)
    write_atomically(path + ".pub", (line + "\n").encode(), 0o644)
    return True


def legacy_host_key(ssh_keygen: str, setting: str, log: logging.Logger) -> HostKey | None:
    """The original jupyter-sshd-proxy's host key, if it exists and sshd can use it.

    One it cannot use is left out with a warning (sshd would leave it out
    too): clients that pinned it are then refused, as ssh refuses any host
    whose key changed."""
    if not setting:
        return None
    path = os.path.expanduser(setting)  # $HOME, as the original expanded it
    if not os.path.lexists(path):
        return None
    fix = (
        f"make it readable by you only (chmod 600 {path}), or retire it with "
        "c.SSHDProxy.legacy_host_key = ''"
    )
    try:
        public = public_half(ssh_keygen, path, fix)
    except PreflightError as error:
        log.warning(
            "jupyter-sshd-proxy: the original jupyter-sshd-proxy's %s; until then, clients "
            "that pinned it are refused",
            error,
        )
        return None
    return HostKey(path, public, legacy=True)


def presented(ours: list[HostKey], legacy: HostKey | None) -> list[HostKey]:
    """The HostKey lines for sshd, in order: the legacy key first (sshd presents
    the first key of each type), then all of ours."""
    return ours if legacy is None else [legacy, *ours]
