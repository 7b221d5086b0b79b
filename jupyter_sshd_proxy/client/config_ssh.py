"""`jupyter-sshd-proxy config-ssh URL`: make `ssh NAME` work, with the host key pinned.

Everything that can fail (token, network, server answers, the existing
config's markers) is checked before anything is written, and each file is
replaced atomically, so a failed run leaves ~/.ssh/config as it was.
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys

from ..errors import ConfigSSHError
from ..files import write_atomically
from . import ssh_files
from .proxy_command import read_token
from .rest import ServerAPI
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
    out=sys.stdout,
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

    old_config = _read(ssh_config)
    token = read_token(token_file)
    api = ServerAPI(base, token)
    status = api.get("sshd-proxy/api/status", "sshd-proxy status endpoint")
    host_keys = api.get("sshd-proxy/api/host-keys", "sshd-proxy host-keys endpoint")["keys"]
    if not host_keys:
        msg = f"{base} has no host keys to pin; see the Jupyter server's log"
        raise ConfigSSHError(msg)
    block = ssh_files.render_block(
        name=name,
        user=status["user"],
        proxy_argv=[
            sys.executable,
            "-m",
            "jupyter_sshd_proxy",
            "proxy",
            "--token-file",
            token_path,
            base,
        ],
        identity_file=identity,
        known_hosts=known_hosts_path,
        host_key_checking=host_key_checking,
    )
    try:
        new_config = ssh_files.put_block(old_config, name, block)
    except ValueError as error:
        msg = f"{ssh_config}: {error}"
        raise ConfigSSHError(msg) from None
    old_known = _read(known_hosts_path)
    new_known = ssh_files.put_known_hosts(
        old_known, name, [(key["type"], key["key"]) for key in host_keys]
    )

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
        from .rest import explain

        location = body.get("location") if isinstance(body, dict) else None
        what = "sshd-proxy authorized-keys endpoint"
        raise ConfigSSHError(explain(code, base, what, body, location))

    os.makedirs(own_dir, mode=0o700, exist_ok=True)
    write_atomically(token_path, token.encode() + b"\n", 0o600)
    write_atomically(known_hosts_path, new_known.encode(), 0o644)
    mode = os.stat(ssh_config).st_mode & 0o777 if os.path.exists(ssh_config) else 0o600
    write_atomically(ssh_config, new_config.encode(), mode)
    out.write(
        f"jupyter-sshd-proxy: `ssh {name}` is ready: host keys pinned in {known_hosts_path}, "
        f"{identity}.pub authorized, Host block in {ssh_config}\n"
    )
    return 0


def _read(path: str) -> str:
    try:
        with open(path, newline="") as stream:
            return stream.read()
    except FileNotFoundError:
        return ""


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
    if not os.path.exists(identity):
        os.makedirs(os.path.dirname(identity), mode=0o700, exist_ok=True)
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
    )
