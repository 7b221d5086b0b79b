"""The Host block in ~/.ssh/config and the pinned host keys, as text.

Pure functions: render a block, put it into a config text in place of the old
one (everything else kept byte for byte), and the same for known_hosts lines.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

BEGIN = "# >>> jupyter-sshd-proxy {name} >>>"
END = "# <<< jupyter-sshd-proxy {name} <<<"
HOST_KEY_CHECKING = ("yes", "accept-new")


def host_name(url_base: str) -> str:
    """A Host name from a server URL: hub.example.org/user/alice/ -> hub.example.org-alice."""
    without_scheme = url_base.split("://", 1)[-1].rstrip("/")
    host, _, path = without_scheme.partition("/")
    user = re.search(r"(?:^|/)user/([^/]+)", path)
    name = host.replace(":", "-") + (f"-{user.group(1)}" if user else "")
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        msg = (
            f"--name {name!r} must be letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
        raise ValueError(msg)
    return name


def _config_value(value: str) -> str:
    """A value for ssh_config: quoted when it contains white space."""
    return f'"{value}"' if any(char.isspace() for char in value) else value


def _command_line(argv: list[str]) -> str:
    """ssh runs ProxyCommand through /bin/sh; Windows' ssh.exe through CreateProcess."""
    if os.name == "nt":
        return subprocess.list2cmdline(argv)
    return shlex.join(argv)


def render_block(
    *,
    name: str,
    user: str,
    proxy_argv: list[str],
    identity_file: str,
    known_hosts: str,
    host_key_checking: str = "yes",
) -> str:
    if host_key_checking not in HOST_KEY_CHECKING:
        msg = (
            f"host key checking must be one of {', '.join(HOST_KEY_CHECKING)}, "
            f"not {host_key_checking!r}"
        )
        raise ValueError(msg)
    lines = [
        BEGIN.format(name=name),
        "# Written by `jupyter-sshd-proxy config-ssh`; run it again to update this block.",
        f"Host {name}",
        f"    User {user}",
        f"    HostKeyAlias {name}",
        f"    UserKnownHostsFile {_config_value(known_hosts)}",
        f"    StrictHostKeyChecking {host_key_checking}",
        f"    IdentityFile {_config_value(identity_file)}",
        "    IdentitiesOnly yes",
        f"    ProxyCommand {_command_line(proxy_argv)}",
        END.format(name=name),
    ]
    return "\n".join(lines) + "\n"


def put_block(config: str, name: str, block: str) -> str:
    """config with block in place of the old block for name, or appended."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    lines = config.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == begin]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == end]
    if starts and ends and ends[0] > starts[0]:
        return "".join(lines[: starts[0]]) + block + "".join(lines[ends[0] + 1 :])
    if starts or ends:
        msg = (
            f"the jupyter-sshd-proxy block for {name} is damaged (a marker line is "
            "missing); fix or remove it by hand"
        )
        raise ValueError(msg)
    if not config:
        return block
    separator = "" if config.endswith("\n\n") else ("\n" if config.endswith("\n") else "\n\n")
    return config + separator + block


def put_known_hosts(known_hosts: str, alias: str, keys: list[tuple[str, str]]) -> str:
    """known_hosts with the lines for alias replaced by keys [(type, base64)]."""
    kept = [
        line for line in known_hosts.splitlines(keepends=True) if line.split(None, 1)[:1] != [alias]
    ]
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    return "".join(kept) + "".join(f"{alias} {kind} {key}\n" for kind, key in keys)
