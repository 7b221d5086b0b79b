"""`jupyter-sshd-proxy config-ssh HUB_URL --name NAME`: every server of a Hub at once.

`ssh NAME` reaches the user's default server and `ssh NAME.SERVER` the named
server SERVER, including servers made after this ran. One marked block in
~/.ssh/config holds:

* a Host stanza for each server that exists now (VS Code's Remote Explorer
  and shell completion list only names they can see);
* a `Host NAME.*` stanza for the servers made later (OpenSSH 8.5 or newer),
  whose ProxyCommand takes the server from the name ssh was given (%n) and
  whose KnownHostsCommand pins each server's host keys on its first
  connection (known_hosts_command.py). With an older ssh, one line says so
  and only the servers that exist get stanzas.

Host keys are pinned as for one server: from each server's authenticated
API over verified TLS, now for the servers that run, at the latest on the
first connection for the others, and never again after that.

The token the user gives is traded for a new one from the Hub's API that
can only reach this user's servers and read their state (and start them,
with --start), that expires (--token-expires-in, 30 days by default), and
whose note names this machine on the Hub's token page. Only that one is
stored; the one given is never written anywhere. A Hub that cannot make such
a token is one line, and the given token is stored only with
--store-pasted-token.

Everything the Hub and the servers send is checked first (hub.py,
untrusted.py); everything that can fail is tried before the new token is
asked for; a failure after that takes the new token back. Files are written
as config_ssh.py writes them (atomically, locked, ~/.ssh/config last).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from . import certificates, launcher, ssh_files, untrusted
from .config_ssh import (
    _check_same_server,
    _check_state_dir,
    _check_with_ssh,
    _check_writable,
    _diff,
    _encode,
    _ensure_identity,
    _locked_both,
    _mode,
    _put_block,
    _read,
    _write,
    local_paths,
)
from .errors import APIError, ConfigSSHError, HubError, ProxyError, SSHDProxyError
from .hub import (
    Hub,
    Identity,
    IssuedToken,
    expiry_text,
    info_path,
    parse_duration,
    read_info,
    ssh_scopes,
)
from .hub_urls import server_path, ssh_name
from .known_hosts_command import known_hosts_name
from .proxy_command import read_token
from .rest import ServerAPI, explain
from .urls import is_loopback

DEFAULT_EXPIRES_IN = "30d"
MAX_LEFT_OUT_LINES = 20  # a Hub that sends thousands of bad names gets one more line


@dataclass
class Found:
    """What one running server told us: the account sshd runs as, its host keys."""

    user: str
    host_keys: list[tuple[str, str]]


def config_ssh_hub(
    url: str,
    *,
    name: str | None,
    identity: str | None,
    token_file: str | None,
    ssh_config: str | None,
    dry_run: bool,
    ca_file: str | None = None,
    connection_sharing: bool = True,
    start: bool = False,
    token_expires_in: str = DEFAULT_EXPIRES_IN,
    store_pasted_token: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    hub = Hub(url, "", ca_file=ca_file)  # (the token comes below, once the checks passed)
    base = hub.url
    name_given = name is not None
    try:
        name = ssh_files.check_name(name or ssh_files.host_name(base))
        expires_in = parse_duration(token_expires_in)
    except ValueError as error:
        raise ConfigSSHError(str(error)) from None
    if base.startswith("http://") and not is_loopback(base):
        say("http:// sends the token unencrypted; use https://")
    ssh_config, ssh_dir, own_dir, known_hosts_path, token_path, identity, ca_file = local_paths(
        ssh_config, name, identity, ca_file
    )
    control_dir = own_dir if connection_sharing and os.name != "nt" else None
    if control_dir is not None and not ssh_files.sharing_fits(control_dir):
        control_dir = None
        say(
            f"connection sharing stays off: a control socket in {own_dir} would not fit in "
            "a unix socket address (104 bytes)"
        )
    pattern = _pattern_possible()

    _check_state_dir(own_dir)
    if not name_given:  # (before the token goes anywhere)
        _check_same_server(ssh_config, _read(ssh_config), name, base)

    given, stored = _given_token(token_file, token_path, base)
    hub = Hub(base, given, ca_file=ca_file)
    me = hub.whoami()
    if me.servers is None:
        msg = (
            f"the token may not read {me.user}'s servers (it needs the scope "
            f"read:servers!user={me.user}); use a token from {base}hub/token"
        )
        raise ConfigSSHError(msg)
    for line in me.left_out[:MAX_LEFT_OUT_LINES]:
        say(line)
    if len(me.left_out) > MAX_LEFT_OUT_LINES:
        say(f"left out {len(me.left_out) - MAX_LEFT_OUT_LINES} more servers with unsafe names")
    found = _running_servers(base, me, given, ca_file, name)
    # With the Hub's certificate authority, no key is uploaded: a certificate
    # is renewed before each connection instead (certificates.py).
    certified = bool(certificates.authority_keys(base, ca_file))
    certificate = os.path.join(own_dir, f"{name}-cert.pub")
    stanzas = _stanzas(name, me, found, pattern)
    proxy_argv, known_hosts_argv = _commands(
        base, me.user, name, token_path, ca_file, start, known_hosts_path, identity
    )
    if certified:  # no key to authorize on a server's first use
        at = known_hosts_argv.index("--identity")
        del known_hosts_argv[at : at + 2]
    description = (
        f"{me.user}'s servers on {base}: `ssh {name}` is the default server, "
        f"`ssh {name}.SERVER` the named server SERVER"
    )
    try:
        block = ssh_files.render_hub_block(
            name=name,
            description=description,
            stanzas=stanzas,
            proxy_argv=proxy_argv,
            known_hosts_argv=known_hosts_argv if pattern else None,
            identity_file=identity,
            known_hosts=known_hosts_path,
            control_dir=control_dir,
        )
        # ssh -G runs a Match's exec: the block it checks runs `false` there
        # instead of the certificate command (a check, and --dry-run, ask the
        # authority for nothing and write no certificate).
        checked_block = block
        if certified:
            argv = _certificate_argv(base, me.user, token_path, ca_file, identity, certificate)
            block = certificates.with_certificate(
                block, certificates.match_lines(name, argv, certificate)
            )
            checked_block = certificates.with_certificate(
                checked_block, certificates.match_lines(name, ["false"], certificate)
            )
    except ValueError as error:
        raise ConfigSSHError(str(error)) from None
    old_config = _read(ssh_config)
    new_config = _put_block(ssh_config, old_config, name, block)
    old_known = _read(known_hosts_path)
    new_known = _pin(old_known, name, found)
    for path in (ssh_config, known_hosts_path, token_path, info_path(token_path)):
        _check_writable(path)
    if not os.path.exists(identity):
        _check_writable(identity)
    _check_all_with_ssh(
        ssh_config, _put_block(ssh_config, old_config, name, checked_block), block, stanzas
    )

    if dry_run:
        out.write(_diff(ssh_config, old_config, new_config))
        out.write(_diff(known_hosts_path, old_known, new_known))
        if not os.path.exists(identity):
            out.write(f"# would make a new key {identity}\n")
        what = "store the token you gave" if store_pasted_token or stored else "ask the Hub for"
        uses = (
            f"get a certificate for {identity}.pub from the Hub's certificate authority"
            if certified
            else f"authorize {identity}.pub on {len(found)} running servers"
        )
        out.write(f"# would {uses} and {what} a token for ssh in {token_path}\n")
        return 0

    public_key = _ensure_identity(identity)
    old_info = read_info(token_path)
    if stored:
        token, info = given, old_info
    elif store_pasted_token:
        say(
            "storing the token you gave as it is (--store-pasted-token): it can do all it "
            "could, for as long as it lives; revoke it on the Hub's token page when done"
        )
        token, info = given, _info(base, me, name, None, me.scopes, None, ca_file, start)
    else:
        issued = _issue(hub, me.user, start, expires_in, certified)
        token = issued.token
        info = _info(
            base, me, name, issued.token_id, issued.scopes, issued.expires_at, ca_file, start
        )
    try:
        if not certified:
            for server in found:
                _authorize(base, me.user, server, token, ca_file, public_key)
        for directory in (ssh_dir, own_dir):
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as error:
                msg = f"cannot make the directory {directory}: {error.strerror or error}"
                raise ConfigSSHError(msg) from None
        if certified:  # before any file is replaced: a refusal leaves the last setup working
            certificates.ensure(base, me.user, token, identity, certificate, ca_file)
        with _locked_both(ssh_config, known_hosts_path):
            known_hosts = _pin(_read(known_hosts_path), name, found)
            current = _read(ssh_config)
            config = _put_block(ssh_config, current, name, block)
            if current != old_config:  # another program changed it meanwhile: check again
                if not name_given:
                    _check_same_server(ssh_config, current, name, base)
                checked = _put_block(ssh_config, current, name, checked_block)
                _check_all_with_ssh(ssh_config, checked, block, stanzas)
            _write(known_hosts_path, _encode(known_hosts), 0o644)
            _write(token_path, token.encode() + b"\n", 0o600)
            _write(info_path(token_path), _encode(json.dumps(info, indent=1) + "\n"), 0o600)
            _write(ssh_config, _encode(config), _mode(ssh_config))
    except BaseException:
        if info is not old_info and info.get("token_id") and not store_pasted_token:
            hub.revoke(me.user, info["token_id"])
        raise
    old_id = old_info.get("token_id")
    if (
        not stored
        and isinstance(old_id, str)
        and old_id != info.get("token_id")
        and old_info.get("user") == me.user
    ):
        hub.revoke(me.user, old_id)  # the token this one replaces (best effort)
    names = ", ".join(s.ssh_name for s in stanzas if s.ssh_name)
    later = f" and {name}.SERVER for servers made later" if pattern else ""
    until = expiry_text(info.get("expires_at"))
    out.write(
        f"jupyter-sshd-proxy: `ssh {name}` is ready ({names}{later}); host keys pinned in "
        f"{known_hosts_path}, Host block in {ssh_config}"
        + (f"; the token expires on {until}" if until else "")
        + "\n"
    )
    return 0


def _issue(hub: Hub, user: str, start: bool, expires_in: int, certified: bool) -> IssuedToken:
    """The token for ssh; with --start on a Hub older than 6 (no start:servers),
    one that may start (and stop) the user's servers; with the Hub's
    certificate authority, one that may ask it for certificates."""
    more = [certificates.service_scope()] if certified else []
    try:
        return hub.issue_token(user, ssh_scopes(user, start) + more, expires_in, _note())
    except HubError as error:
        if not (start and error.status == 400 and "start:servers" in str(error)):
            raise
    scopes = ssh_scopes(user, start, "servers") + more
    return hub.issue_token(user, scopes, expires_in, _note())


def _certificate_argv(
    base: str, user: str, token_path: str, ca_file: str | None, identity: str, certificate: str
) -> list[str]:
    """The Match exec command that renews the certificate before a connection."""
    return [
        *launcher.python_command(), "certificate",
        "--token-file", token_path, "--user", user, "--identity", identity,
        "--certificate", certificate,
        *(["--ca-file", ca_file] if ca_file else []), base,
    ]  # fmt: skip


def say(line: str) -> None:
    print(f"jupyter-sshd-proxy: {untrusted.printable(line, 2000)}", file=sys.stderr)


def _pattern_possible() -> bool:
    """Whether this ssh can pin a server it has not seen (KnownHostsCommand); one
    line if not."""
    if os.name == "nt":
        say(
            "on Windows only the servers that exist now get a Host entry; run config-ssh "
            "again for servers made later"
        )
        return False
    version = ssh_files.ssh_version()
    if version is not None and version < ssh_files.KNOWN_HOSTS_COMMAND_VERSION:
        say(
            f"this ssh (OpenSSH {version[0]}.{version[1]}) has no KnownHostsCommand (8.5 has): "
            "only the running servers get Host entries; run config-ssh again for others"
        )
        return False
    return True


def _given_token(token_file: str | None, token_path: str, base: str) -> tuple[str, bool]:
    """(the token given, False), or with none given, the one stored for this Hub
    by an earlier run (True): then it is kept as it is, not traded."""
    try:
        return read_token(token_file), False
    except ProxyError:
        if token_file or read_info(token_path).get("hub") != base:
            raise
    return read_token(token_path), True


def _running_servers(
    base: str, me: Identity, token: str, ca_file: str | None, name: str
) -> dict[str, Found]:
    """For each running server: the account sshd runs as and its host keys (from
    its authenticated API). A server that cannot tell is one line, pinned later."""
    found = {}
    assert me.servers is not None
    for server in sorted(me.servers.values(), key=lambda s: s.name):
        if server.state != "running":
            continue
        url = base + server_path(me.user, server.name)
        api = ServerAPI(url, token, ca_file=ca_file)
        try:
            status = api.get("sshd-proxy/api/status", "sshd-proxy status endpoint")
            keys = api.get("sshd-proxy/api/host-keys", "sshd-proxy host-keys endpoint")
        except APIError as error:
            say(f"{ssh_name(name, server.name)}: not pinned now ({error}); pinned on first use")
            continue
        found[server.name] = Found(untrusted.user_name(status, url), untrusted.host_keys(keys, url))
    return found


def _account(me: Identity, found: dict[str, Found]) -> str:
    """The account the servers run as, for those that do not run now: the default
    server's, else the one most running servers have, else the Hub user's name."""
    if "" in found:
        return found[""].user
    if found:
        users = [f.user for f in found.values()]
        return max(sorted(set(users)), key=users.count)
    if untrusted.USER_NAME.fullmatch(me.user):
        say(
            f"no server runs now: ssh will log in as {me.user}, the Hub's user name; if "
            "the servers run as another account (jovyan in most containers), run "
            "config-ssh again while one runs"
        )
        return me.user
    msg = (
        f"no server of {me.user} runs now, so the account ssh logs in as cannot be told; "
        "start one from the Hub's home page and run config-ssh again"
    )
    raise ConfigSSHError(msg)


def _stanzas(
    name: str, me: Identity, found: dict[str, Found], pattern: bool
) -> list[ssh_files.HubStanza]:
    assert me.servers is not None
    account = _account(me, found)
    stanzas = []
    for server in sorted({"", *me.servers}):
        host = ssh_name(name, server)
        if not pattern and server not in found:
            say(f"{host}: left out, it is not running and this ssh cannot pin it later")
            continue
        user = found[server].user if server in found else account
        stanzas.append(ssh_files.HubStanza([host], user, server in found, host))
    if pattern:
        explicit = [f"!{s.ssh_name}" for s in stanzas if s.ssh_name != name]
        hosts = [f"{name}.*", *explicit, *ssh_files.UNSAFE_TYPED_NAMES]
        stanzas.append(ssh_files.HubStanza(hosts, account, False))
    return stanzas


def _commands(
    base: str,
    user: str,
    name: str,
    token_path: str,
    ca_file: str | None,
    start: bool,
    known_hosts: str,
    identity: str,
) -> tuple[list[str], list[str]]:
    """The ProxyCommand's and the KnownHostsCommand's words, but for the host name."""
    common = ["--token-file", token_path] + (["--ca-file", ca_file] if ca_file else [])
    common += ["--user", user, "--name", name]
    program = launcher.python_command()
    proxy = [*program, "proxy", *common, *(["--start"] if start else []), base]
    known = [*program, "known-hosts", *common, "--known-hosts", known_hosts]
    return proxy, [*known, "--identity", identity, base]


def _pin(known_hosts: str, name: str, found: dict[str, Found]) -> str:
    for server, what in sorted(found.items()):
        alias = known_hosts_name(ssh_name(name, server))
        known_hosts = ssh_files.put_known_hosts(known_hosts, alias, what.host_keys)
    return known_hosts


def _check_all_with_ssh(
    ssh_config: str, config: str, block: str, stanzas: list[ssh_files.HubStanza]
) -> None:
    """`ssh -G` for each explicit name and for one name the pattern stands for."""
    parts = re.split(r"(?m)^(?=Host )", block)
    for stanza, text in zip(stanzas, parts[1:]):
        host = stanza.ssh_name or stanza.hosts[0].replace("*", "jupyter-sshd-proxy-check")
        _check_with_ssh(ssh_config, config, host, text + "Host *\n")


def _authorize(
    base: str, user: str, server: str, token: str, ca_file: str | None, public_key: str
) -> None:
    url = base + server_path(user, server)
    api = ServerAPI(url, token, ca_file=ca_file)
    code, body = api.call("POST", "sshd-proxy/api/authorized-keys", {"key": public_key})
    if code not in (201, 409):
        location = body.get("location") if isinstance(body, dict) else None
        what, path = "sshd-proxy authorized-keys endpoint", "sshd-proxy/api/authorized-keys"
        raise ConfigSSHError(explain(code, url, what, body, location, path))


def _note() -> str:
    """The token's note on the Hub's token page: this machine's name."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:60] or "a laptop"
    return f"jupyter-sshd-proxy on {host}"


def _info(
    base: str,
    me: Identity,
    name: str,
    token_id: str | None,
    scopes: list[str],
    expires_at: str | None,
    ca_file: str | None,
    start: bool,
) -> dict[str, Any]:
    return {
        "hub": base,
        "user": me.user,
        "name": name,
        "token_id": token_id,
        "scopes": scopes,
        "expires_at": expires_at,
        "ca_file": ca_file,
        "start": start,
    }


def is_hub(url: str, ca_file: str | None) -> bool:
    """Whether url is a JupyterHub's own URL (not a server's): its hub/api/ answers
    with a version, which needs no token."""
    from .hub_urls import is_user_url

    if is_user_url(url):
        return False
    try:
        return Hub(url, "", ca_file=ca_file, timeout=10).version() is not None
    except (SSHDProxyError, HubError):
        return False
