"""The Host block in ~/.ssh/config and the pinned host keys, as text.

Pure functions: render a block, put it into a config text in place of the old
one (everything else kept byte for byte), and the same for known_hosts lines.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass

from .untrusted import KNOWN_HOSTS_LINE, USER_NAME

BEGIN = "# >>> jupyter-sshd-proxy {name} >>>"
END = "# <<< jupyter-sshd-proxy {name} <<<"
HOST_KEY_CHECKING = ("yes", "accept-new")
CONTROL_PERSIST = "10m"  # how long a shared connection outlives its last session
CONTROL_SOCKET = "cm-%C"  # in the control directory; %C: ssh's hash of the connection
MAX_SOCKET_PATH = 104  # bytes in a unix socket address, with the NUL (macOS, BSD)
# A control directory that ssh makes itself (a short one, for a long home)
# holds nothing a shell or ssh_config would read as more than a path.
MADE_BY_SSH = re.compile(r"/[A-Za-z0-9/._-]+")


def host_name(url_base: str) -> str:
    """A Host name from a server URL: hub.example.org/user/alice/ -> hub.example.org-alice,
    and a named server hub.example.org/user/alice/gpu/ -> hub.example.org-alice-gpu."""
    without_scheme = url_base.split("://", 1)[-1].rstrip("/")
    host, _, path = without_scheme.partition("/")
    user = re.search(r"(?:^|/)user/([^/]+)(?:/([^/]+))?", path)
    name = host.replace(":", "-")
    if user:
        name += "".join(f"-{part}" for part in user.groups() if part)
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", name)
    # A letter or digit first, as check_name() wants (an IPv6 host starts with "[").
    return re.sub(r"^[^A-Za-z0-9]+", "", cleaned) or "jupyter"


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        msg = (
            f"--name {name!r} must be letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
        raise ValueError(msg)
    return name


def ssh_words(text: str) -> list[str]:
    """text split into words as ssh reads the value of an ssh_config line
    (argv_split() of OpenSSH 8.7 and later): spaces and tabs separate words;
    ' and " quote, anywhere in a word; a backslash escapes \\, ' and " (and a
    space outside quotes) and is kept before anything else; a word that starts
    with # begins a comment. ValueError for a quote that is never closed, which
    makes ssh refuse the whole file ("invalid quotes")."""
    words = []
    pos = 0
    while pos < len(text):
        if text[pos] in " \t":
            pos += 1
            continue
        if text[pos] == "#":
            break
        word, quote = [], ""
        while pos < len(text):
            char, following = text[pos], text[pos + 1 : pos + 2]
            if char == "\\" and (following in ("\\", "'", '"') or (following == " " and not quote)):
                word.append(following)
                pos += 2
                continue
            if not quote and char in " \t":
                break
            if not quote and char in "'\"":
                quote = char
            elif quote and char == quote:
                quote = ""
            else:
                word.append(char)
            pos += 1
        if quote:
            msg = f"a quote in {text!r} is never closed"
            raise ValueError(msg)
        words.append("".join(word))
    return words


def _config_value(path: str, what: str, tokens: str = "") -> str:
    """path for ssh_config, where ssh expands %-tokens: its % doubled, then the
    tokens (ssh's own, such as %C) added, the whole in double quotes when it
    has white space, ' or #, and each backslash that ssh would read as an
    escape doubled (before \\, ', or the closing quote: \\\\server\\home,
    C:\\Users\\'t Hooft). A Windows path without those is written as it is,
    which older ssh (before 8.7, no escapes) reads alike. ssh also expands
    ${VARIABLE} in these paths, with no way to escape it: such a path is
    refused, as is a double quote, which older ssh cannot hold."""
    if not path.isprintable() or '"' in path:
        msg = (
            f"{what} {path!r} has a control character or a double quote in it, which "
            "ssh_config cannot hold; use another path"
        )
        raise ValueError(msg)
    if "${" in path:
        msg = (
            f"{what} {path!r} has '${{' in it, which ssh would read as an environment "
            "variable; use another path"
        )
        raise ValueError(msg)
    value = path.replace("%", "%%") + tokens
    quoted = any(char.isspace() or char in "'#" for char in value)
    written = []
    for pos, char in enumerate(value):
        following = value[pos + 1 : pos + 2] or ('"' if quoted else "")
        written.append("\\\\" if char == "\\" and following in ("\\", "'", '"') else char)
    line = "".join(written)
    line = f'"{line}"' if quoted else line
    if ssh_words(line) != [value]:  # the last guard: ssh reads back what we mean
        msg = f"{what} {path!r} cannot be written so that ssh reads it back; use another path"
        raise ValueError(msg)
    return line


def _command_line(argv: list[str]) -> str:
    """A ProxyCommand: ssh expands %-tokens in it (so % is doubled), then runs it
    through the user's $SHELL -c (Windows' ssh.exe: through CreateProcess).

    The URL holds no character any shell reads (urls.server_url saw to it); the
    paths are single-quoted where needed, which sh, bash, zsh and fish all read
    alike, except for a backslash: fish reads \\' inside single quotes as a quote."""
    if os.name == "nt":
        return windows_command_line(argv).replace("%", "%%")
    for word in argv:
        if "\\" in word:
            msg = (
                f"{word!r} has a backslash in it, which shells quote differently (fish); "
                "use a path without one"
            )
            raise ValueError(msg)
    return shlex.join(argv).replace("%", "%%")


def windows_command_line(argv: list[str]) -> str:
    """argv for CreateProcess (the C runtime's quoting, as subprocess.list2cmdline),
    with each word that holds a ' in double quotes as well: ssh reads the
    ProxyCommand line with its own rules first (ssh_words), where a lone ' in
    C:\\Users\\O'Brien opens a quote that never closes, and ssh refuses the file."""
    words = []
    for word in argv:
        if word and not any(char in word for char in " \t'\""):
            words.append(word)
            continue
        quoted, backslashes = ['"'], 0
        for char in word:
            if char == "\\":
                backslashes += 1
                continue
            quoted.append(
                "\\" * (backslashes * 2 + 1) + char if char == '"' else "\\" * backslashes + char
            )
            backslashes = 0
        quoted.append("\\" * (backslashes * 2) + '"')
        words.append("".join(quoted))
    return " ".join(words)


def sharing_fits(control_dir: str) -> bool:
    """Whether ssh's control sockets (CONTROL_SOCKET) fit in a unix socket address.

    %C is ssh's hash of the connection (40 characters), so the path is short and
    the same for every alias of one host. ssh binds the socket under a name 17
    characters longer, then renames it; sun_path holds 104 bytes on macOS and
    the BSDs (108 on Linux), the last one a NUL.
    """
    socket = os.path.join(control_dir, CONTROL_SOCKET.replace("%C", "0" * 40))
    return len(socket.encode()) + 17 + 1 <= MAX_SOCKET_PATH


def private_dir_command(directory: str) -> str:
    """A shell command that makes directory (mode 0700) unless it is there, and
    succeeds only if it is then a directory of this user, not a symbolic link.

    For a control directory in a place where others may make files (/tmp):
    `Match ... exec` runs it before ssh looks for a control socket, so a
    directory that another account made (after a reboot, say) turns sharing
    off instead of handing the session to that account's socket. sh, bash,
    zsh, fish and tcsh all read it alike."""
    if not MADE_BY_SSH.fullmatch(directory):
        msg = f"the control socket directory {directory!r} is not a plain path"
        raise ValueError(msg)
    return (
        f"mkdir -p -m 700 {directory} && test -d {directory} -a -O {directory} -a ! -L {directory}"
    )


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
    control_dir_made_by_ssh: bool = False,
) -> str:
    """The marked Host block; connection sharing when control_dir is given.

    With control_dir_made_by_ssh, the sharing options are under a `Match`
    whose exec makes and checks the directory (private_dir_command) every
    time ssh runs: they apply only when it is the user's own.

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
        "    ForwardAgent no",
    ]
    sharing = []
    if control_dir is not None:
        directory = os.path.join(control_dir, "")
        socket = _config_value(directory, "the control socket directory", CONTROL_SOCKET)
        sharing = [
            "    ControlMaster auto",
            f"    ControlPath {socket}",
            f"    ControlPersist {control_persist}",
        ]
    if not control_dir_made_by_ssh:
        lines += sharing
    lines.append(f"    ProxyCommand {_command_line(proxy_argv)}")
    if control_dir is not None and control_dir_made_by_ssh:
        lines.append(f'Match host {name} exec "{private_dir_command(control_dir)}"')
        lines += sharing
    lines += [
        # What follows the block (the file's global options, when the block is
        # at the top) applies to every host again, as before the block came.
        "Host *",
        END.format(name=name),
    ]
    for line in lines:
        if not line.isprintable():  # the last guard: one value, one line
            msg = f"the Host block would have a control character in it: {line!r}"
            raise ValueError(msg)
        ssh_words(line)  # and one ssh reads: a quote never closed is refused
    return "\n".join(lines) + "\n"


def _lines(text: str) -> list[str]:
    """text's lines with their ends, split at "\\n" only: str.splitlines() also
    splits at \\x0c, \\x1c, \\u2028 and more, which a line of a file may hold."""
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)


def _find_block(lines: list[str], name: str) -> tuple[int, int] | None:
    """(first, last) line numbers of the block for name, None if there is none;
    ValueError if only one of its markers is there."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == begin]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == end]
    if starts and ends and ends[0] > starts[0]:
        return starts[0], ends[0]
    if starts or ends:
        msg = (
            f"the jupyter-sshd-proxy block for {name} is damaged (a marker line is "
            "missing); fix or remove it by hand"
        )
        raise ValueError(msg)
    return None


def put_block(config: str, name: str, block: str) -> str:
    """config with block in place of the old block for name, or at the top.

    At the top, because ssh takes the first value it finds for each option: a
    block below a `Host *` that says `StrictHostKeyChecking no` would not pin
    anything. The block ends with `Host *`, so the global options that began
    the file still apply to every host."""
    lines = _lines(config)
    found = _find_block(lines, name)
    if found is not None:
        first, last = found
        return "".join(lines[:first]) + block + "".join(lines[last + 1 :])
    return block + "\n" + config if config else block


def block_url(config: str, name: str) -> str | None:
    """The server URL in the ProxyCommand of config's block for name (the last
    word that starts with http:// or https://), None if there is no such block."""
    lines = _lines(config)
    found = _find_block(lines, name)
    if found is None:
        return None
    for line in lines[found[0] : found[1]]:
        keyword, _, value = line.strip().partition(" ")
        if keyword.lower() != "proxycommand":
            continue
        words = value.replace("%%", "%").split()
        urls = [word.strip("'\"") for word in words if re.match(r"['\"]?https?://", word)]
        return urls[-1] if urls else None
    return None


def block_settings(block: str) -> dict[str, str]:
    """The options of a block render_block() made, by lower-case name, as ssh
    reads them (quotes and escapes taken off): what `ssh -G NAME` should show."""
    settings: dict[str, str] = {}
    for line in _lines(block):
        if line.startswith("Host *"):
            break
        if line.startswith("    "):
            keyword, _, value = line.strip().partition(" ")
            if keyword.lower() != "proxycommand":  # ssh runs that one as it is written
                words = ssh_words(value)
                value = words[0] if len(words) == 1 else value
            settings[keyword.lower()] = value
    return settings


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


# A whole Hub: `ssh NAME` for the default server, `ssh NAME.SERVER` for a named one.

KNOWN_HOSTS_COMMAND_VERSION = (8, 5)  # OpenSSH's first with KnownHostsCommand
# The Host pattern for servers made after config-ssh ran also matches what a
# user (or a program handing ssh a host name, as git does for a submodule)
# types. The ProxyCommand gets that name as '%n' in single quotes, which
# every POSIX shell reads literally except for a quote (and, in fish, a
# backslash): names with either never match. (OpenSSH 9.6 and newer also
# refuse such names themselves.)
UNSAFE_TYPED_NAMES = ('"!*\'*"', '"!*\\*"')


def _argv_split_line(argv: list[str], what: str) -> str:
    """argv as a KnownHostsCommand, which ssh splits into words itself (no shell)
    and then %-expands word by word: % doubled, a word with white space or #
    in double quotes. Quotes, backslashes and ${ are refused: ssh versions
    read them differently."""
    words = []
    for word in argv:
        if not word.isprintable() or any(char in word for char in "\"'\\") or "${" in word:
            msg = (
                f"{what}: {word!r} has a quote, a backslash, '${{' or a control character "
                "in it, which ssh's KnownHostsCommand cannot hold; use another path"
            )
            raise ValueError(msg)
        word = word.replace("%", "%%")
        words.append(f'"{word}"' if any(c.isspace() or c == "#" for c in word) else word)
    return " ".join(words)


@dataclass
class HubStanza:
    """One Host stanza of a Hub's block: explicit names, or the pattern (hosts
    ending in '*') for every other server of the user."""

    hosts: list[str]
    user: str
    pinned: bool  # its host keys are in known_hosts already: no KnownHostsCommand
    ssh_name: str | None = None  # the one name of an explicit stanza; None: the pattern


def render_hub_block(
    *,
    name: str,
    description: str,
    stanzas: list[HubStanza],
    proxy_argv: list[str],
    known_hosts_argv: list[str] | None,
    identity_file: str,
    known_hosts: str,
    control_dir: str | None = None,
    control_persist: str = CONTROL_PERSIST,
) -> str:
    """The marked block for a Hub: one stanza per server that exists now (VS Code
    and shell completion list them), then the pattern for later ones.

    proxy_argv and known_hosts_argv get the ssh name as their last word: the
    stanza's own, or for the pattern, the name as typed ('%n'). The pattern's
    hosts may carry negations; every explicit name is checked by check_name.
    """
    lines = [
        BEGIN.format(name=check_name(name)),
        "# Written by `jupyter-sshd-proxy config-ssh`; run it again to update this block.",
        f"# {description}",
    ]
    for stanza in stanzas:
        if not USER_NAME.fullmatch(stanza.user):
            msg = f"refusing to write the user name {stanza.user!r}: it is not a portable one"
            raise ValueError(msg)
        if stanza.ssh_name is not None:
            host = check_name(stanza.ssh_name)
            typed = shlex.quote(host)
        else:
            host = "%n"
            typed = "'%n'"
        lines += [
            f"Host {' '.join(stanza.hosts)}",
            f"    User {stanza.user}",
            f"    UserKnownHostsFile {_config_value(known_hosts, 'the known_hosts file')}",
            "    StrictHostKeyChecking yes",
            f"    IdentityFile {_config_value(identity_file, 'the identity')}",
            "    IdentitiesOnly yes",
            "    ForwardAgent no",
        ]
        if not stanza.pinned and known_hosts_argv is not None:
            command = _argv_split_line(known_hosts_argv, "the KnownHostsCommand")
            lines.append(f"    KnownHostsCommand {command} {host} %I %H")
        if control_dir is not None:
            directory = os.path.join(control_dir, "")
            socket = _config_value(directory, "the control socket directory", CONTROL_SOCKET)
            lines += [
                "    ControlMaster auto",
                f"    ControlPath {socket}",
                f"    ControlPersist {control_persist}",
            ]
        lines.append(f"    ProxyCommand {_command_line(proxy_argv)} {typed}")
    lines += ["Host *", END.format(name=name)]
    for line in lines:
        if not line.isprintable():  # the last guard: one value, one line
            msg = f"the Host block would have a control character in it: {line!r}"
            raise ValueError(msg)
    return "\n".join(lines) + "\n"


def ssh_version(ssh: str = "ssh") -> tuple[int, int] | None:
    """(major, minor) of OpenSSH's ssh, from `ssh -V`; None if it cannot be told."""
    try:
        result = subprocess.run(
            [ssh, "-V"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            errors="replace", timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"OpenSSH_(?:for_Windows_)?(\d+)\.(\d+)", result.stderr + result.stdout)
    return (int(match[1]), int(match[2])) if match else None
