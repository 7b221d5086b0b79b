"""`jupyter-sshd-proxy config-ssh URL`: make `ssh NAME` work, with the host key pinned.

Everything that can fail is checked before anything is written: the token,
the network, the server's answers (untrusted.py: a hostile server cannot put
lines of its own into ~/.ssh/config or known_hosts), the existing config's
markers, every path that goes into the block. Then each file is replaced
atomically, written through a symlink to its target (dotfile managers link
~/.ssh/config), and the read-modify-write of ~/.ssh/config and of the shared
known_hosts happens under files.locked(), so two runs at once (two --name)
both end up in the files. A failed run leaves ~/.ssh/config as it was, byte
for byte.

The block turns on OpenSSH's connection sharing (ControlMaster) where ssh
has it (not on Windows): the second and later connections reuse the first
one's WebSocket instead of starting a ProxyCommand each.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import TextIO

from ..errors import ConfigSSHError
from ..files import locked, write_atomically
from . import ssh_files, untrusted
from .proxy_command import read_token
from .rest import ServerAPI, explain
from .urls import server_url


def default_ssh_config() -> str:
    if os.name == "nt":
        return os.path.join(os.path.expanduser("~"), ".ssh", "config")
    import pwd

    # ssh finds ~ in the password database, not in $HOME: so do we.
    return os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".ssh", "config")


def config_ssh(
    url: str,
    *,
    name: str | None,
    identity: str | None,
    token_file: str | None,
    ssh_config: str | None,
    host_key_checking: str,
    dry_run: bool,
    ca_file: str | None = None,
    connection_sharing: bool = True,
    out: TextIO = sys.stdout,
) -> int:
    base = server_url(url)
    try:
        name = ssh_files.check_name(name or ssh_files.host_name(base))
    except ValueError as error:
        raise ConfigSSHError(str(error)) from None
    ssh_config = os.path.abspath(ssh_config or default_ssh_config())
    ssh_dir = os.path.dirname(ssh_config)
    own_dir = os.path.join(ssh_dir, "jupyter-sshd-proxy")
    known_hosts_path = os.path.join(own_dir, "known_hosts")
    token_path = os.path.join(own_dir, f"{name}.token")
    identity = os.path.abspath(os.path.expanduser(identity or os.path.join(ssh_dir, "id_ed25519")))
    ca_file = os.path.abspath(ca_file) if ca_file else None
    control_dir = own_dir if connection_sharing and os.name != "nt" else None
    if control_dir is not None and not ssh_files.sharing_fits(control_dir):
        print(
            f"jupyter-sshd-proxy: connection sharing stays off: a control socket in "
            f"{control_dir} would not fit in a unix socket address (104 bytes)",
            file=sys.stderr,
        )
        control_dir = None

    token = read_token(token_file)
    api = ServerAPI(base, token, ca_file=ca_file)
    status = api.get("sshd-proxy/api/status", "sshd-proxy status endpoint")
    user = untrusted.user_name(status, base)
    host_keys = untrusted.host_keys(
        api.get("sshd-proxy/api/host-keys", "sshd-proxy host-keys endpoint"), base
    )
    proxy_argv = [sys.executable, "-m", "jupyter_sshd_proxy", "proxy"]
    proxy_argv += ["--ca-file", ca_file] if ca_file else []
    proxy_argv += ["--token-file", token_path, base]
    try:
        block = ssh_files.render_block(
            name=name,
            user=user,
            proxy_argv=proxy_argv,
            identity_file=identity,
            known_hosts=known_hosts_path,
            host_key_checking=host_key_checking,
            control_dir=control_dir,
        )
    except ValueError as error:
        raise ConfigSSHError(str(error)) from None
    # Now, before the key goes to the server; again under the lock, to write.
    old_config = _read(ssh_config)
    new_config = _put_block(ssh_config, old_config, name, block)
    old_known = _read(known_hosts_path)
    new_known = ssh_files.put_known_hosts(old_known, name, host_keys)

    if dry_run:
        out.write(_diff(ssh_config, old_config, new_config))
        out.write(_diff(known_hosts_path, old_known, new_known))
        if not os.path.exists(identity):
            out.write(f"# would make a new key {identity}\n")
        out.write(
            f"# would authorize {identity}.pub on {base} and store the token in {token_path}\n"
        )
        return 0

    public_key = _ensure_identity(identity)
    code, body = api.call("POST", "sshd-proxy/api/authorized-keys", {"key": public_key})
    if code not in (201, 409):
        location = body.get("location") if isinstance(body, dict) else None
        what = "sshd-proxy authorized-keys endpoint"
        raise ConfigSSHError(explain(code, base, what, body, location))

    with _writing(own_dir):
        for directory in (ssh_dir, own_dir):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        write_atomically(token_path, token.encode() + b"\n", 0o600)
        with _locked_both(ssh_config, known_hosts_path):
            new_config = _put_block(ssh_config, _read(ssh_config), name, block)
            known_hosts = ssh_files.put_known_hosts(_read(known_hosts_path), name, host_keys)
            write_atomically(known_hosts_path, _encode(known_hosts), 0o644)
            write_atomically(ssh_config, _encode(new_config), _mode(ssh_config))
    out.write(
        f"jupyter-sshd-proxy: `ssh {name}` is ready: host keys pinned in {known_hosts_path}, "
        f"{identity}.pub authorized, Host block in {ssh_config}\n"
    )
    return 0


def _put_block(ssh_config: str, config: str, name: str, block: str) -> str:
    try:
        return ssh_files.put_block(config, name, block)
    except ValueError as error:
        msg = f"{ssh_config}: {error}"
        raise ConfigSSHError(msg) from None


@contextlib.contextmanager
def _locked_both(ssh_config: str, known_hosts: str) -> Iterator[None]:
    """The edit locks of both files' directories, always in the same order (one
    lock when they share a directory: a second flock on it would wait for ever)."""
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(locked(ssh_config))
        if os.path.dirname(first) != os.path.dirname(os.path.realpath(known_hosts)):
            stack.enter_context(locked(known_hosts))
        yield


@contextlib.contextmanager
def _writing(where: str) -> Iterator[None]:
    """An OSError while writing (a read-only ~/.ssh, a full disk) as one line."""
    try:
        yield
    except OSError as error:
        path = error.filename or where
        msg = f"cannot write {path}: {error.strerror or error}"
        raise ConfigSSHError(msg) from None


def _read(path: str) -> str:
    """The file's text (bytes that are not UTF-8 kept as they are), "" if it is missing."""
    try:
        with open(path, "rb") as stream:
            return stream.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return ""
    except OSError as error:
        msg = f"cannot read {path}: {error.strerror}"
        raise ConfigSSHError(msg) from None


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _mode(path: str) -> int:
    """The file's permissions, to keep them; 0600 for a new file."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return 0o600


def _diff(path: str, old: str, new: str) -> str:
    if old == new:
        return f"# {path}: unchanged\n"
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), path, path + " (new)"
        )
    )


def _ensure_identity(identity: str) -> str:
    """The public key line of identity, making an ed25519 key first if there is none."""
    public = identity + ".pub"
    with _writing(identity):
        os.makedirs(os.path.dirname(identity), mode=0o700, exist_ok=True)
    with locked(identity):  # two runs at once (two --name) make one key
        if not os.path.exists(identity):
            result = subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "jupyter-sshd-proxy",
                 "-f", identity],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                msg = f"ssh-keygen could not make {identity}: {result.stderr.strip()}"
                raise ConfigSSHError(msg)
            print(f"jupyter-sshd-proxy: made a new key {identity}", file=sys.stderr)
    if not os.path.exists(public):
        msg = f"{public} is missing; make it with: ssh-keygen -y -f {identity} > {public}"
        raise ConfigSSHError(msg)
    with open(public) as stream:
        return stream.read().strip()


def main_config_ssh(args: argparse.Namespace) -> int:
    return config_ssh(
        args.url,
        name=args.name,
        identity=args.identity,
        token_file=args.token_file,
        ssh_config=args.ssh_config,
        host_key_checking=args.host_key_checking,
        dry_run=args.dry_run,
        ca_file=args.ca_file,
        connection_sharing=args.connection_sharing,
    )
