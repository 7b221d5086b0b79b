"""The Host block in ~/.ssh/config and the pinned host keys, as text.

Pure functions: render a block, put it into a config text in place of the old
one (everything else kept byte for byte), and the same for known_hosts lines.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

from .untrusted import USER_NAME

BEGIN = "# >>> jupyter-sshd-proxy {name} >>>"
END = "# <<< jupyter-sshd-proxy {name} <<<"
HOST_KEY_CHECKING = ("yes", "accept-new")
CONTROL_PERSIST = "10m"  # how long a shared connection outlives its last session
CONTROL_SOCKET = "cm-%C"  # in the control directory; %C: ssh's hash of the connection
MAX_SOCKET_PATH = 104  # bytes in a unix socket address, with the NUL (macOS, BSD)


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


def _config_value(path: str, what: str, tokens: str = "") -> str:
    """path for ssh_config, where ssh expands %-tokens: its % doubled, then the
    tokens (ssh's own, such as %C) added, the whole in double quotes when it
    has white space, ' or #."""
    if not path.isprintable() or '"' in path:
        msg = (
            f"{what} {path!r} has a control character or a double quote in it, which "
            "ssh_config cannot hold; use another path"
        )
        raise ValueError(msg)
    value = path.replace("%", "%%") + tokens
    return f'"{value}"' if any(char.isspace() or char in "'#" for char in value) else value


def _command_line(argv: list[str]) -> str:
    """A ProxyCommand: ssh expands %-tokens in it (so % is doubled), then runs it
    through /bin/sh (Windows' ssh.exe: through CreateProcess)."""
    line = subprocess.list2cmdline(argv) if os.name == "nt" else shlex.join(argv)
    return line.replace("%", "%%")


def sharing_fits(control_dir: str) -> bool:
    """Whether ssh's control sockets (CONTROL_SOCKET) fit in a unix socket address.

    %C is ssh's hash of the connection (40 characters), so the path is short and
    the same for every alias of one host. ssh binds the socket under a name 17
    characters longer, then renames it; sun_path holds 104 bytes on macOS and
    the BSDs (108 on Linux), the last one a NUL.
    """
    socket = os.path.join(control_dir, CONTROL_SOCKET.replace("%C", "0" * 40))
    return len(socket.encode()) + 17 + 1 <= MAX_SOCKET_PATH


def render_block(
    *,
    name: str,
    user: str,
    proxy_argv: list[str],
    identity_file: str,
    known_hosts: str,
    host_key_checking: str = "yes",
    control_dir: str | None = None,
    control_persist: str = CONTROL_PERSIST,
) -> str:
    """The marked Host block; connection sharing when control_dir is given.

    Raises ValueError for a value ssh_config cannot hold. The user name comes
    from the server: untrusted.user_name() has checked it, and so does this.
    """
    if not USER_NAME.fullmatch(user):
        msg = f"refusing to write the user name {user!r}: it is not a portable one"
        raise ValueError(msg)
    if host_key_checking not in HOST_KEY_CHECKING:
        msg = (
            f"host key checking must be one of {', '.join(HOST_KEY_CHECKING)}, "
            f"not {host_key_checking!r}"
        )
        raise ValueError(msg)
    lines = [
        BEGIN.format(name=check_name(name)),
        "# Written by `jupyter-sshd-proxy config-ssh`; run it again to update this block.",
        f"Host {name}",
        f"    User {user}",
        f"    HostKeyAlias {name}",
        f"    UserKnownHostsFile {_config_value(known_hosts, 'the known_hosts file')}",
        f"    StrictHostKeyChecking {host_key_checking}",
        f"    IdentityFile {_config_value(identity_file, 'the identity')}",
        "    IdentitiesOnly yes",
    ]
    if control_dir is not None:
        directory = os.path.join(control_dir, "")
        socket = _config_value(directory, "the control socket directory", CONTROL_SOCKET)
        lines += [
            "    ControlMaster auto",
            f"    ControlPath {socket}",
            f"    ControlPersist {control_persist}",
        ]
    lines += [f"    ProxyCommand {_command_line(proxy_argv)}", END.format(name=name)]
    for line in lines:
        if not line.isprintable():  # the last guard: one value, one line
            msg = f"the Host block would have a control character in it: {line!r}"
            raise ValueError(msg)
    return "\n".join(lines) + "\n"


def _lines(text: str) -> list[str]:
    """text's lines with their ends, split at "\\n" only: str.splitlines() also
    splits at \\x0c, \\x1c, \\u2028 and more, which a line of a file may hold."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def put_block(config: str, name: str, block: str) -> str:
    """config with block in place of the old block for name, or appended."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    lines = _lines(config)
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


KNOWN_HOSTS_LINE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]* [a-z][a-z0-9@.-]* [A-Za-z0-9+/]+={0,2}\n"
)


def put_known_hosts(known_hosts: str, alias: str, keys: list[tuple[str, str]]) -> str:
    """known_hosts with the lines for alias replaced by keys [(type, base64)].

    The file is shared by every block: the other lines are kept byte for byte,
    and the new ones can only be `ALIAS TYPE BASE64` (keys checked by
    untrusted.host_keys before they come here).
    """
    new = [f"{alias} {kind} {key}\n" for kind, key in keys]
    for line in new:
        if not KNOWN_HOSTS_LINE.fullmatch(line):
            msg = f"refusing to write {line!r} into known_hosts: it is not ALIAS TYPE BASE64"
            raise ValueError(msg)
    kept = [line for line in _lines(known_hosts) if line.split(None, 1)[:1] != [alias]]
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    return "".join(kept) + "".join(new)
