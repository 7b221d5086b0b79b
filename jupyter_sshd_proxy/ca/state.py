"""The authority's state directory: its signing key, the keys it publishes,
and the last serial number it gave.

    <state dir>/            mode 0700, the service's own
        ca_key, ca_key.pub  the signing key (ed25519), made on first start,
                            unless an operator gives one (--ca-key, a
                            Kubernetes Secret mounted as a file)
        serial              the last serial number given, replaced atomically
        .jupyter-sshd-proxy.lock

A key being rotated in or out is given as a public key file beside it
(--trusted-key): servers trust it too, the authority does not sign with it.
"""

from __future__ import annotations

import os
import stat
import subprocess

from jupyter_sshd_proxy_client.errors import PreflightError
from jupyter_sshd_proxy_client.files import locked, write_atomically
from jupyter_sshd_proxy_client.keys.grammar import PublicKey, parse_key


def ensure_state_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        msg = (
            f"the state directory {path} must be the service's own and private "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); fix it with: chmod 700 {path}"
        )
        raise PreflightError(msg)
    return path


def ensure_ca_key(ssh_keygen: str, state_dir: str, given: str | None) -> str:
    """The signing key's path: the operator's, or ca_key in the state directory,
    made now with ssh-keygen if it does not exist."""
    path = given or os.path.join(state_dir, "ca_key")
    if not os.path.exists(path):
        if given:
            msg = f"the CA key {given} does not exist; mount it there, or leave out --ca-key"
            raise PreflightError(msg)
        temporary = path + ".tmp"
        for leftover in (temporary, temporary + ".pub"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        result = subprocess.run(
            [ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", "jupyter-sshd-proxy user CA",
             "-f", temporary],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            msg = f"ssh-keygen could not make the CA key {path}: {result.stderr.strip()}"
            raise PreflightError(msg)
        os.chmod(temporary, 0o600)
        os.replace(temporary + ".pub", path + ".pub")
        os.replace(temporary, path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077 and not given:
        os.chmod(path, 0o600)
    elif mode & 0o007:
        msg = f"the CA key {path} is readable by every account (mode {mode:04o}); chmod o-rwx it"
        raise PreflightError(msg)
    return path


def public_key_of(ssh_keygen: str, private_key: str) -> PublicKey:
    """The public half of the signing key, from ssh-keygen -y."""
    result = subprocess.run(
        [ssh_keygen, "-y", "-f", private_key],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        msg = f"ssh-keygen cannot read the CA key {private_key}: {result.stderr.strip()}"
        raise PreflightError(msg)
    return parse_key(result.stdout.strip())


def read_public_keys(path: str) -> list[PublicKey]:
    """Every key line of a public key file (--trusted-key)."""
    try:
        with open(path, encoding="utf-8") as stream:
            lines = [line for line in stream.read().splitlines() if line.strip()]
    except OSError as error:
        msg = f"cannot read the trusted key file {path}: {error.strerror}"
        raise PreflightError(msg) from None
    keys = []
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        try:
            keys.append(parse_key(line))
        except ValueError as error:
            msg = f"{path} holds a line that is not a public key: {error}"
            raise PreflightError(msg) from None
    return keys


def next_serial(state_dir: str) -> int:
    """The next serial number: one more than the last one given, kept in the
    state directory (replaced atomically, under the directory's lock)."""
    path = os.path.join(state_dir, "serial")
    with locked(path):
        try:
            with open(path) as stream:
                last = int(stream.read().strip() or 0)
        except FileNotFoundError:
            last = 0
        except ValueError:
            msg = f"{path} does not hold a serial number; restore it (never lower it)"
            raise PreflightError(msg) from None
        serial = last + 1
        write_atomically(path, f"{serial}\n".encode(), 0o600)
    return serial
