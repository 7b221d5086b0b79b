"""`jupyter-sshd-proxy config-ssh URL`: make `ssh NAME` work, with the host key pinned.

Everything that can fail is checked before anything is written or the key
is sent to the server: the token, the network, the server's answers
(untrusted.py: a hostile server cannot put lines of its own into
~/.ssh/config or known_hosts), the existing config's markers, every path
that goes into the block, that each file's real directory takes new files,
and that ssh itself reads the new config as we mean it (`ssh -G`: an earlier
`Host *` with `StrictHostKeyChecking no` would void the pinning). Then each
file is replaced atomically, written through a symlink to its target (dotfile
managers link ~/.ssh/config), ~/.ssh/config last: until it is written, the
other two files change nothing. The read-modify-write of ~/.ssh/config and
of the shared known_hosts happens under files.locked(), so two runs at once
(two --name) both end up in the files. A failed run leaves ~/.ssh/config as
it was, byte for byte.

A new block goes at the top of ~/.ssh/config, where its options come first
(ssh takes the first value it finds); an existing block is updated in place.
A block for another server of the same name is not replaced unless --name
says so.

The block turns on OpenSSH's connection sharing (ControlMaster) where ssh
has it (not on Windows): the second and later connections reuse the first
one's WebSocket instead of starting a ProxyCommand each. The control sockets
live in ~/.ssh/jupyter-sshd-proxy, or, for a home too long for a unix socket
address there, in a short directory that only the user can have made
(_control_dir).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import NamedTuple, TextIO

from . import launcher, ssh_files, untrusted
from .errors import BadURLError, ConfigSSHError
from .files import lock_path, locked, real_path, write_atomically
from .proxy_command import read_token
from .rest import ServerAPI, explain
from .urls import is_loopback, server_url

# What `ssh -G NAME` must show as the block has it (as ssh_config spells it).
CHECKED_BY_SSH = {
    "user": "User",
    "hostkeyalias": "HostKeyAlias",
    "userknownhostsfile": "UserKnownHostsFile",
    "stricthostkeychecking": "StrictHostKeyChecking",
    "identityfile": "IdentityFile",
    "identitiesonly": "IdentitiesOnly",
    "forwardagent": "ForwardAgent",
    "proxycommand": "ProxyCommand",
    "knownhostscommand": "KnownHostsCommand",
}
SSH_G_TIMEOUT = 30  # seconds; ssh -G does not connect (a Match exec might be slow)


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
    name_given = name is not None
    try:
        name = ssh_files.check_name(name or ssh_files.host_name(base))
    except ValueError as error:
        raise ConfigSSHError(str(error)) from None
    if base.startswith("http://") and not is_loopback(base):
        print(
            "jupyter-sshd-proxy: http:// sends the token unencrypted; use https://",
            file=sys.stderr,
        )
    ssh_config, ssh_dir, own_dir, known_hosts_path, token_path, identity, ca_file = local_paths(
        ssh_config, name, identity, ca_file
    )
    control_dir, made_by_ssh, sharing_off = None, False, None
    if connection_sharing and os.name != "nt":
        control_dir, made_by_ssh, sharing_off = _control_dir(own_dir)

    _check_state_dir(own_dir)
    if not name_given:  # (before the token goes anywhere)
        _check_same_server(ssh_config, _read(ssh_config), name, base)

    token = read_token(token_file)
    api = ServerAPI(base, token, ca_file=ca_file)
    status = api.get("sshd-proxy/api/status", "sshd-proxy status endpoint")
    user = untrusted.user_name(status, base)
    host_keys = untrusted.host_keys(
        api.get("sshd-proxy/api/host-keys", "sshd-proxy host-keys endpoint"), base
    )
    proxy_argv = [*launcher.python_command(), "proxy"]
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
            control_dir_made_by_ssh=made_by_ssh,
        )
    except ValueError as error:
        raise ConfigSSHError(str(error)) from None
    # Now, before the key goes to the server; again under the lock, to write.
    old_config = _read(ssh_config)
    new_config = _put_block(ssh_config, old_config, name, block)
    old_known = _read(known_hosts_path)
    new_known = ssh_files.put_known_hosts(old_known, name, host_keys)
    targets = [ssh_config, known_hosts_path, token_path]
    for path in targets + ([] if os.path.exists(identity) else [identity]):
        _check_writable(path)
    _check_with_ssh(ssh_config, new_config, name, block)
    if sharing_off:  # (not before: a refusal is one line)
        print(f"jupyter-sshd-proxy: connection sharing stays off: {sharing_off}", file=sys.stderr)

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
        path = "sshd-proxy/api/authorized-keys"
        raise ConfigSSHError(explain(code, base, what, body, location, path))

    for directory in (ssh_dir, own_dir):
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as error:
            msg = f"cannot make the directory {directory}: {error.strerror or error}"
            raise ConfigSSHError(msg) from None
    with _locked_both(ssh_config, known_hosts_path):
        known_hosts = ssh_files.put_known_hosts(_read(known_hosts_path), name, host_keys)
        current = _read(ssh_config)
        config = _put_block(ssh_config, current, name, block)
        if current != old_config:  # another program changed it meanwhile: check again
            if not name_given:
                _check_same_server(ssh_config, current, name, base)
            _check_with_ssh(ssh_config, config, name, block)
        # ~/.ssh/config last: the block is what makes the other two files count.
        _write(known_hosts_path, _encode(known_hosts), 0o644)
        _write(token_path, token.encode() + b"\n", 0o600)
        _write(ssh_config, _encode(config), _mode(ssh_config))
    out.write(
        f"jupyter-sshd-proxy: `ssh {name}` is ready: host keys pinned in {known_hosts_path}, "
        f"{identity}.pub authorized, Host block in {ssh_config}\n"
    )
    return 0


class LocalPaths(NamedTuple):
    """Where config-ssh keeps what it writes for the ssh name `name`."""

    ssh_config: str
    ssh_dir: str
    own_dir: str  # the state directory: tokens, pinned host keys, control sockets
    known_hosts: str
    token: str
    identity: str
    ca_file: str | None


def local_paths(
    ssh_config: str | None, name: str, identity: str | None, ca_file: str | None
) -> LocalPaths:
    ssh_config = os.path.abspath(ssh_config or default_ssh_config())
    ssh_dir = os.path.dirname(ssh_config)
    own_dir = os.path.join(ssh_dir, "jupyter-sshd-proxy")
    return LocalPaths(
        ssh_config,
        ssh_dir,
        own_dir,
        os.path.join(own_dir, "known_hosts"),
        os.path.join(own_dir, f"{name}.token"),
        os.path.abspath(os.path.expanduser(identity or os.path.join(ssh_dir, "id_ed25519"))),
        os.path.abspath(ca_file) if ca_file else None,
    )


def _check_state_dir(own_dir: str) -> None:
    """Refuse a state directory (the token, the pinned host keys, the control
    sockets) that another account owns or may write to."""
    try:
        info = os.stat(own_dir)
    except FileNotFoundError:
        return  # made later, mode 0700
    except OSError as error:
        msg = f"cannot read the state directory {own_dir}: {error.strerror or error}"
        raise ConfigSSHError(msg) from None
    me = os.getuid()
    if not stat.S_ISDIR(info.st_mode):
        msg = (
            f"{own_dir} is not a directory; config-ssh keeps the token and the pinned "
            "host keys there: move that file away and run config-ssh again"
        )
    elif info.st_uid != me:
        msg = (
            f"the state directory {own_dir} belongs to uid {info.st_uid}, not to you (uid "
            f"{me}): its owner could read the token and change the pinned host keys; move it "
            "away and run config-ssh again, which makes a new one"
        )
    elif info.st_mode & 0o022:
        msg = (
            f"the state directory {own_dir} is writable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): they could change the pinned host keys and "
            f"the control sockets; make it yours alone with: chmod 700 {own_dir}"
        )
    else:
        return
    raise ConfigSSHError(msg)


def _control_dir(own_dir: str) -> tuple[str | None, bool, str | None]:
    """Where ssh's control sockets go: (directory, made by ssh, why sharing is off).

    In own_dir when a socket there fits in a unix socket address (a home of
    up to 18 characters). Otherwise in a short directory of this user's own:
    $XDG_RUNTIME_DIR/jupyter-sshd-proxy-UID (made by the system for this
    user only, mode 0700), else /tmp/jupyter-sshd-proxy-UID. ssh makes and
    checks that one each time it runs (ssh_files.private_dir_command), so a
    directory that another account makes there turns sharing off, never
    hands a session to that account. One already there that is not this
    user's private directory turns sharing off now, with its reason."""
    if ssh_files.sharing_fits(own_dir):
        return own_dir, False, None
    name = f"jupyter-sshd-proxy-{os.getuid()}"
    bases = ["/tmp"]
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime) and _private_dir_problem(runtime) is None:
        bases.insert(0, runtime)
    why = (
        f"a control socket in {own_dir} would not fit in a unix socket address "
        f"({ssh_files.MAX_SOCKET_PATH} bytes)"
    )
    for base in bases:
        directory = os.path.join(base, name)
        if not (ssh_files.sharing_fits(directory) and ssh_files.MADE_BY_SSH.fullmatch(directory)):
            continue
        problem = _private_dir_problem(directory)
        if problem is None or problem == "missing":
            return directory, True, None
        why += f", and {directory} {problem}: remove it and run config-ssh again"
        break
    return None, False, why


def _private_dir_problem(directory: str) -> str | None:
    """None if directory is one of this user's, mode 0700 or narrower, and not a
    symbolic link; "missing"; or what is wrong with it."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != os.getuid():
        return f"belongs to uid {info.st_uid}"
    if info.st_mode & 0o077:
        return f"has mode {stat.S_IMODE(info.st_mode):04o}"
    return None


def _check_same_server(ssh_config: str, config: str, name: str, base: str) -> None:
    """Refuse to replace, under a name made from the URL, a block for another
    server (/user/alice/ and /user/alice/gpu/ were once one name), or an https://
    block with an http:// one."""
    try:
        old = ssh_files.block_url(config, name)
        old = server_url(old) if old else None
    except (ValueError, BadURLError):
        old = None  # not a URL we can read: our markers say the block is ours
    if old is None or old == base:
        return
    if old.startswith("http://") and base == "https://" + old[len("http://") :]:
        return  # the same server, now over https
    if old.startswith("https://") and base == "http://" + old[len("https://") :]:
        msg = (
            f"{ssh_config} has Host {name} for {old}: refusing to replace it with {base}, "
            f"which sends the token unencrypted; use {old}, or give --name {name} to replace it"
        )
        raise ConfigSSHError(msg)
    msg = (
        f"{ssh_config} has Host {name} for another server, {old}; give this one a name of "
        f"its own with --name NAME, or --name {name} to replace that block"
    )
    raise ConfigSSHError(msg)


def _check_writable(path: str) -> None:
    """Refuse unless path's real target can be written: its directory (or the
    nearest one that exists, where the missing ones would be made) takes a new
    file. A link to a directory that is not there (an unmounted disk) is refused."""
    target = real_path(path)
    directory = os.path.dirname(target)
    if os.path.islink(path) and not os.path.isdir(directory):
        msg = (
            f"cannot write {target} (where {path} links to): its directory does not exist; "
            "mount it or fix the link, then run config-ssh again"
        )
        raise ConfigSSHError(msg)
    existing = directory
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    probe = os.path.join(existing, f".jupyter-sshd-proxy-probe-{secrets.token_hex(4)}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as error:
        msg = f"cannot write {target}: {existing} takes no new file ({error.strerror or error})"
        raise ConfigSSHError(msg) from None


def _check_with_ssh(ssh_config: str, config: str, name: str, block: str) -> None:
    """Refuse unless `ssh -G NAME`, reading config (written to a file beside
    ssh_config for the time it takes), uses the block's settings: ssh takes the
    first value it finds, and a `Host *` above the block would win."""
    ssh = shutil.which("ssh")
    if ssh is None or os.name == "nt":
        return
    directory = os.path.dirname(real_path(ssh_config))
    try:
        fd, temporary = tempfile.mkstemp(
            prefix=".jupyter-sshd-proxy-check-", dir=directory if os.path.isdir(directory) else None
        )
    except OSError as error:
        msg = f"cannot write a file beside {ssh_config}: {error.strerror or error}"
        raise ConfigSSHError(msg) from None
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(_encode(config))
        result = subprocess.run(
            [ssh, "-G", "-F", temporary, name],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            timeout=SSH_G_TIMEOUT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        msg = f"`ssh -G {name}` did not finish within {SSH_G_TIMEOUT}s reading {ssh_config}"
        raise ConfigSSHError(msg) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    if result.returncode != 0:
        said = untrusted.printable(result.stderr.replace(temporary, ssh_config), 300)
        msg = (
            f"ssh cannot read {ssh_config} with the new block in it: {said}; fix the "
            "file, then run config-ssh again"
        )
        raise ConfigSSHError(msg)
    seen: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, setting = line.partition(" ")
        seen.setdefault(key, []).append(setting)
    wanted = ssh_files.block_settings(block)
    for key, keyword in CHECKED_BY_SSH.items():
        value = wanted.get(key)
        if value is None or key not in seen:  # not in the block, or not shown by this ssh
            continue
        forms = {value, value.replace("%%", "%")}
        if key == "stricthostkeychecking" and value == "yes":
            forms.add("true")
        used = seen[key]
        if (key == "identityfile" and forms & set(used)) or used[0] in forms:
            continue
        msg = (
            f"ssh would not use the block's {keyword} for {name}: something above it in "
            f"{ssh_config} (a `Host` or `Match` that matches {name}, or a file it includes) "
            f"sets {used[0]!r}; "
            f"move that below the jupyter-sshd-proxy blocks, or remove the block for {name} "
            "and run config-ssh again to have it written at the top"
        )
        raise ConfigSSHError(msg)


def _write(path: str, data: bytes, mode: int) -> None:
    """write_atomically(), an OSError as one line that names the real file."""
    try:
        write_atomically(path, data, mode)
    except OSError as error:
        msg = f"cannot write {real_path(path)}: {error.strerror or error}"
        raise ConfigSSHError(msg) from None


def _put_block(ssh_config: str, config: str, name: str, block: str) -> str:
    try:
        return ssh_files.put_block(config, name, block)
    except ValueError as error:
        msg = f"{ssh_config}: {error}"
        raise ConfigSSHError(msg) from None


@contextlib.contextmanager
def _locked_both(ssh_config: str, known_hosts: str) -> Iterator[None]:
    """The edit locks of both files, always in the same order (one lock when
    they share it: a second flock on it would wait until the timeout)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(locked(ssh_config))
        if lock_path(known_hosts) != lock_path(ssh_config):
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
    from .config_hub import DEFAULT_EXPIRES_IN, config_ssh_hub, is_hub

    if is_hub(args.url, args.ca_file):
        return config_ssh_hub(
            args.url,
            name=args.name,
            identity=args.identity,
            token_file=args.token_file,
            ssh_config=args.ssh_config,
            dry_run=args.dry_run,
            ca_file=args.ca_file,
            connection_sharing=args.connection_sharing,
            start=args.start,
            token_expires_in=args.token_expires_in or DEFAULT_EXPIRES_IN,
            store_pasted_token=args.store_pasted_token,
        )
    hub_only = [
        flag
        for flag, given in (
            ("--start", args.start),
            ("--token-expires-in", args.token_expires_in is not None),
            ("--store-pasted-token", args.store_pasted_token),
        )
        if given
    ]
    if hub_only:
        msg = (
            f"{' and '.join(hub_only)} go with the Hub's own URL (https://hub.example.org/), "
            f"not a server's: leave {'them' if len(hub_only) > 1 else 'it'} out, or give the "
            "Hub's URL"
        )
        raise ConfigSSHError(msg)
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
