"""Everything about the per-user sshd, as plain functions.

Finding the programs, checking what sshd's StrictModes would refuse, making the
host keys once, rendering sshd_config and asking sshd itself to check it. Each
failure is a PreflightError whose message is one line: what is wrong and how
to fix it.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from jupyter_sshd_proxy_client.errors import PreflightError
from jupyter_sshd_proxy_client.files import write_atomically

SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
LOGIN_GRACE_SECONDS = 30  # sshd's default is 120
INSTALL_HINT = "install openssh-server (Debian/Ubuntu) or openssh (conda-forge)"
HOST_KEY_TYPES: tuple[tuple[str, list[str]], ...] = (("ed25519", []), ("rsa", ["-b", "3072"]))

# Variables sshd sets for each session itself, or that describe the Jupyter
# server's own terminal rather than the ssh session.
SESSION_OWN_VARIABLES = frozenset(
    (
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "MAIL",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "TERM",
        "DISPLAY",
        "XAUTHORITY",
        "TMUX",
        "TMUX_PANE",
        "STY",
        "WINDOW",
    )
)


class SSHDVersion(NamedTuple):
    major: int
    minor: int
    text: str

    def at_least(self, major: int, minor: int) -> bool:
        return (self.major, self.minor) >= (major, minor)


# What ssh may do (c.SSHDProxy.policy): the sshd options of each policy that
# limits it. They come before extra_options in sshd_config, and sshd takes the
# first value of a keyword, so nothing else can reopen what they close; the
# settings refuse extra options that try (settings.check_policy_options).
NO_FORWARDING = (
    "AllowTcpForwarding no",
    "AllowStreamLocalForwarding no",
    "AllowAgentForwarding no",
    "X11Forwarding no",
    "PermitTunnel no",
    "PermitOpen none",
)
POLICY_OPTIONS = {
    "all": (),
    "no-forwarding": NO_FORWARDING,
    # sftp (and scp -s, and OpenSSH 9's scp) only: every session runs
    # internal-sftp whatever it asked for, with no terminal; sshd says
    # "This service allows sftp connections only." to a shell or a command.
    "sftp-only": (*NO_FORWARDING, "ForceCommand internal-sftp", "PermitTTY no", "PermitUserRC no"),
}


def policy_options(policy: str, version: SSHDVersion) -> list[str]:
    """The sshd options of a policy, for this sshd's version."""
    options = list(POLICY_OPTIONS.get(policy, ()))
    if options and version.at_least(7, 8):
        options.append("PermitListen none")  # ssh -R: new in 7.8 (AllowTcpForwarding covers it)
    if options and version.at_least(7, 4):
        options.append("DisableForwarding yes")  # every kind at once, new in 7.4
    return options


def find_program(name: str, configured: str, setting: str, near: str | None = None) -> str:
    """The absolute path of an OpenSSH program, or a PreflightError naming the fix."""
    if configured:
        path = os.path.expanduser(configured)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
        msg = (
            f"{name} not found at {configured} ({setting}); correct that setting, "
            f"or unset it to use the {name} of openssh-server (Debian/Ubuntu) or openssh "
            "(conda-forge)"
        )
        raise PreflightError(msg)
    search = [os.environ.get("PATH", ""), *SBIN_DIRS]
    if near:
        search.insert(0, os.path.dirname(near))
    found = shutil.which(name, path=os.pathsep.join(search))
    if found:
        return found
    msg = f"{name} not found on PATH or in {', '.join(SBIN_DIRS)}; {INSTALL_HINT}, or set {setting}"
    raise PreflightError(msg)


def sshd_version(sshd: str) -> SSHDVersion:
    """sshd's version, from `sshd -V` (OpenSSH >= 9.2) or its usage text (older)."""
    result = subprocess.run([sshd, "-V"], capture_output=True, text=True, timeout=10, check=False)
    output = result.stdout + result.stderr
    match = re.search(r"OpenSSH_(\d+)\.(\d+)[^\s,]*", output)
    if not match:
        msg = f"{sshd} is not OpenSSH's sshd (it printed {output.strip()[:80]!r}); {INSTALL_HINT}"
        raise PreflightError(msg)
    return SSHDVersion(int(match.group(1)), int(match.group(2)), match.group(0))


def current_user() -> pwd.struct_passwd:
    """The passwd entry of this process's user; sshd cannot run without one."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        msg = (
            f"uid {uid} has no entry in the passwd database, and sshd needs one; "
            "add the user to /etc/passwd in the image (or run with nss_wrapper), "
            "as containers with random uids (OpenShift) require"
        )
        raise PreflightError(msg) from None


def expand_user_path(path: str, user: pwd.struct_passwd) -> str:
    """Expand ~ and sshd's %h, %u, %U and %% tokens the way sshd will."""
    if path == "~" or path.startswith("~/"):
        path = user.pw_dir + path[1:]
    tokens = {"h": user.pw_dir, "u": user.pw_name, "U": str(user.pw_uid), "%": "%"}

    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        if token not in tokens:
            msg = f"unknown token %{token} in {path!r}; sshd knows %h, %u, %U and %%"
            raise PreflightError(msg)
        return tokens[token]

    return re.sub(r"%(.)", replace, path)


def _unsafe(st: os.stat_result, uid: int) -> str | None:
    """Why sshd's StrictModes would refuse this file or directory, if it would."""
    if st.st_uid not in (0, uid):
        return f"is owned by uid {st.st_uid}, not by you (uid {uid}) or root"
    if st.st_mode & 0o022:
        writable = (
            "group- and world-writable"
            if st.st_mode & 0o020 and st.st_mode & 0o002
            else ("group-writable" if st.st_mode & 0o020 else "world-writable")
        )
        return f"is {writable} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_strict_modes(authorized_keys_files: Iterable[str], user: pwd.struct_passwd) -> None:
    """Refuse, as sshd's StrictModes would, keys files that others could change.

    sshd checks the file and every directory above it up to the home directory
    (or up to / for a file outside home), and then silently ignores the keys:
    the user sees only "Permission denied (publickey)". We say which path is
    wrong and the command that fixes it.
    """
    home = os.path.realpath(user.pw_dir)
    for path in authorized_keys_files:
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
        except FileNotFoundError:
            st = None
        if st is not None:
            problem = _unsafe(st, user.pw_uid)
            if problem:
                _refuse(path, real, problem, st, user)
        directory = real
        while True:
            directory = os.path.dirname(directory)
            try:
                st = os.stat(directory)
            except FileNotFoundError:
                if directory == "/":
                    break
                continue
            problem = _unsafe(st, user.pw_uid)
            if problem:
                _refuse(path, directory, problem, st, user)
            if directory in (home, "/"):
                break


def _refuse(
    keys_file: str, path: str, problem: str, st: os.stat_result, user: pwd.struct_passwd
) -> None:
    if st.st_mode & stat.S_ISVTX:
        # A shared directory such as /tmp: the file does not belong there.
        fix = "move it to a directory only you and root can write, such as ~/.ssh"
    elif st.st_uid not in (0, user.pw_uid):
        fix = f"fix it with: chown {user.pw_name} {path}"
    else:
        fix = f"fix it with: chmod go-w {path}"
    msg = f"sshd would ignore {keys_file}: {path} {problem}; {fix}"
    raise PreflightError(msg)


def terminal_problem(user: pwd.struct_passwd, mounts: str = "/proc/mounts") -> str | None:
    """Why sshd running as this user could not give sessions a terminal, if so.

    sshd makes each new pty owned by group tty and gives up when it cannot;
    a normal user can only if the kernel already creates ptys with that group
    (devpts mounted with gid=5, as Docker and Kubernetes do).
    """
    if user.pw_uid == 0:
        return None
    try:
        tty = grp.getgrnam("tty")
    except KeyError:
        return None  # sshd then uses the user's own group, which works
    try:
        with open(mounts) as stream:
            entries = [line.split() for line in stream]
    except OSError:
        return None
    for entry in entries:
        if len(entry) > 3 and entry[1] == "/dev/pts" and entry[2] == "devpts":
            if f"gid={tty.gr_gid}" in entry[3].split(","):
                return None
            return (
                f"/dev/pts is mounted without gid={tty.gr_gid}, so sshd running as "
                f"{user.pw_name} cannot give ssh sessions a terminal: interactive shells "
                "and ssh -t fail, while commands, scp, sftp, rsync and forwarding work; "
                f"mount devpts with gid={tty.gr_gid},mode=620 as Docker and Kubernetes do"
            )
    return None


def ensure_host_keys(ssh_keygen: str, directory: str, user: pwd.struct_passwd) -> list[str]:
    """The host private keys in directory, made once and kept for good.

    A restarted server must present the same host key, or every client would
    see "REMOTE HOST IDENTIFICATION HAS CHANGED". Keys are written under a
    temporary name and renamed, so a crash never leaves half a key behind.
    """
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as error:
        msg = (
            f"cannot create the host key directory {directory}: {error.strerror}; "
            "make it writable or set c.SSHDProxy.host_key_dir (JUPYTER_SSHD_PROXY_HOST_KEY_DIR)"
        )
        raise PreflightError(msg) from None
    keys = []
    for key_type, options in HOST_KEY_TYPES:
        path = os.path.join(directory, f"ssh_host_{key_type}_key")
        if os.path.exists(path):
            _check_host_key(path, user)
        else:
            _make_host_key(ssh_keygen, path, key_type, options, user)
        if not os.path.exists(path + ".pub"):
            public = _run_keygen([ssh_keygen, "-y", "-f", path], path)
            write_atomically(path + ".pub", public.encode(), 0o644)
        keys.append(path)
    return keys


def _check_host_key(path: str, user: pwd.struct_passwd) -> None:
    st = os.stat(path)
    if st.st_uid != user.pw_uid:
        msg = (
            f"host key {path} is owned by uid {st.st_uid}, not by you; "
            f"fix it with: chown {user.pw_name} {path}"
        )
        raise PreflightError(msg)
    if stat.S_IMODE(st.st_mode) & 0o077:
        # sshd refuses a private key others can read; it is ours, so repair it.
        os.chmod(path, 0o600)


def _make_host_key(
    ssh_keygen: str, path: str, key_type: str, options: list[str], user: pwd.struct_passwd
) -> None:
    temporary = f"{path}.tmp-{secrets.token_hex(4)}"
    comment = f"jupyter-sshd-proxy host key of {user.pw_name}"
    try:
        _run_keygen(
            [ssh_keygen, "-q", "-t", key_type, *options, "-N", "", "-C", comment, "-f", temporary],
            path,
        )
        os.chmod(temporary, 0o600)
        os.replace(temporary + ".pub", path + ".pub")
        os.replace(temporary, path)
    finally:
        for leftover in (temporary, temporary + ".pub"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def _run_keygen(argv: list[str], path: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        reason = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        msg = (
            f"ssh-keygen could not make host key {path}: {reason}; "
            "check that the directory is writable"
        )
        raise PreflightError(msg)
    return result.stdout


def session_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the Jupyter server's environment that ssh sessions get.

    A value that is not UTF-8 (Python holds its bytes as surrogates) is kept:
    sshd_config is written with those bytes (write_private_file), so the
    session gets the value intact, as a terminal would."""
    return {
        name: value
        for name, value in environ.items()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
        and name not in SESSION_OWN_VARIABLES
        and not name.startswith("SSH_")
        and "\n" not in value
        and "\r" not in value
        and "\0" not in value
    }


def _quote(word: str) -> str:
    """Quote one word for sshd_config's argument splitting."""
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _option_key(line: str) -> str:
    """What makes two sshd options the same: the keyword, and a Subsystem's name."""
    words = line.split()
    key = words[0].lower()
    if key == "subsystem" and len(words) > 1:
        key += " " + words[1]
    return key


def render_sshd_config(
    *,
    host_keys: Iterable[str],
    authorized_keys_files: Iterable[str],
    user: pwd.struct_passwd,
    log_level: str,
    version: SSHDVersion,
    extra_options: Iterable[str] = (),
    environment: Mapping[str, str] | None = None,
    port: int | None = None,
    policy: str = "all",
    certificate_options: Iterable[str] = (),
) -> str:
    """sshd_config for the per-user sshd. Depends on nothing in /etc/ssh.

    sshd runs in inetd mode (sshd -i) on connections that the supervisor
    accepts on its unix socket: it never listens itself. ListenAddress says
    loopback all the same (and the port, for a listening sshd -D: the
    benchmark's)."""
    fixed = [
        f"ListenAddress 127.0.0.1:{port}" if port else "ListenAddress 127.0.0.1",
        "AddressFamily inet",
        *(f"HostKey {_quote(key)}" for key in host_keys),
        "PidFile none",
        f"AllowUsers {user.pw_name}",
        "PermitRootLogin " + ("prohibit-password" if user.pw_uid == 0 else "no"),
        "StrictModes yes",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "PermitEmptyPasswords no",
        "UsePAM no",
        # Quoted, and % doubled: the paths are expanded already, and sshd would
        # split a home directory with a space or expand a % in it once more.
        "AuthorizedKeysFile "
        + " ".join(_quote(path.replace("%", "%%")) for path in authorized_keys_files),
        # The Hub's certificate authority, for this server's Hub user only
        # (user_ca.py): TrustedUserCAKeys and AuthorizedPrincipalsFile.
        *certificate_options,
    ]
    defaults = [
        "Subsystem sftp internal-sftp",
        "PrintMotd no",
        "PrintLastLog no",
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding yes",
        "GatewayPorts no",
        "X11Forwarding no",
        "PermitTunnel no",
        "PermitUserEnvironment no",
        "UseDNS no",
        # sshd runs once per connection (sshd -i): MaxStartups, a listener's
        # setting, does not apply; the supervisor bounds the connections that
        # have not logged in yet, and sshd ends each one LoginGraceTime after
        # it began if it has not logged in by then.
        # (A client that vanished is found by the WebSocket's pings, see
        # route.py, not by ClientAliveInterval: its keepalives would count as
        # SSH traffic, and idle sessions would never be culled.)
        f"LoginGraceTime {LOGIN_GRACE_SECONDS}",
        f"LogLevel {log_level}",
    ]
    if version.at_least(9, 8):
        # Every client arrives from 127.0.0.1 through the proxy: do not
        # penalise "the" source for another client's mistakes.
        defaults.append("PerSourcePenalties no")
    limits = policy_options(policy, version)
    extra = list(extra_options)
    replaced = {_option_key(line) for line in [*limits, *extra]}
    lines = [
        "# Written by jupyter-sshd-proxy for this server; it is rewritten on every start.",
        *fixed,
        *limits,
        *extra,
        *(line for line in defaults if _option_key(line) not in replaced),
    ]
    if environment and version.at_least(8, 7):
        pairs = (f"{name}={value}" for name, value in sorted(environment.items()))
        lines.append("SetEnv " + " ".join(_quote(pair) for pair in pairs))
    return "\n".join(lines) + "\n"


PRIVSEP_HINT = re.compile(r"privilege separation directory:?\s*(\S+)", re.IGNORECASE)


def run_sshd_test(sshd: str, config_path: str) -> tuple[dict[str, str], str | None]:
    """sshd -T: the effective options, keyword (lower case) to value, as sshd
    prints them ("logingracetime" -> "30"); or, when sshd refuses to start,
    no options and its reason in one line."""
    result = subprocess.run(
        [sshd, "-T", "-f", config_path],
        capture_output=True,
        text=True,
        # sshd prints SetEnv's values as they are, which need not be UTF-8.
        errors="replace",
        timeout=30,
        check=False,
    )
    if result.returncode == 0:
        options: dict[str, str] = {}
        for line in result.stdout.splitlines():
            keyword, _, value = line.partition(" ")
            options.setdefault(keyword, value)
        return options, None
    reason = "; ".join(line.strip() for line in result.stderr.splitlines() if line.strip())
    return {}, reason or f"exit status {result.returncode}"


def privsep_fix(reason: str) -> str | None:
    """The command that makes sshd's missing privilege separation directory, if
    that is what reason is about."""
    privsep = PRIVSEP_HINT.search(reason)
    return f"mkdir -p -m 0755 {privsep.group(1)}" if privsep else None


def check_sshd_config(sshd: str, config_path: str) -> dict[str, str]:
    """Let sshd itself check the configuration (sshd -T), and explain a refusal.
    Returns the effective options."""
    options, reason = run_sshd_test(sshd, config_path)
    if reason is None:
        return options
    fix = privsep_fix(reason)
    if fix:
        msg = (
            f"sshd refuses to start as root: {reason}; create it with: "
            f"{fix} (or run the Jupyter server as a normal user)"
        )
    else:
        msg = (
            f"sshd rejects its configuration {config_path}: {reason}; "
            "check c.SSHDProxy.extra_options"
        )
    raise PreflightError(msg)


def sshd_argv(sshd: str, config_path: str) -> list[str]:
    """sshd for one connection, on its stdin and stdout (-i, inetd mode), logging
    to stderr (-e), so the Jupyter log has it."""
    return [sshd, "-i", "-e", "-f", config_path]


def write_private_file(path: str, text: str) -> None:
    """Write a file only this user can read, atomically. Text that came from
    bytes that are not UTF-8 (an environment variable, a path) is written as
    those bytes again (surrogateescape, as Python read them)."""
    write_atomically(path, text.encode("utf-8", "surrogateescape"), 0o600)
