"""`jupyter-sshd-proxy servers HUB_URL`: the user's servers, and whether ssh reaches them.

    SERVER     SSH         STATE     LAST ACTIVITY         SSH READY
    (default)  myhub       running   2026-12-04 18:34 UTC  yes
    gpu        myhub.gpu   stopped   2026-12-01 09:10 UTC  -

The token is the one config-ssh stored for this Hub (the newest, or --name's),
else $JUPYTER_SSHD_PROXY_TOKEN or --token-file. SSH READY asks each running
server's sshd-proxy status endpoint. Every value shown passed hub.py's checks
(server names that did not are left out, one line each, on stderr).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import TextIO, TypedDict

from ..errors import APIError, ClientError, ProxyError
from . import untrusted
from .hub import Hub, hub_url, read_info, server_path, ssh_name
from .proxy_command import read_token
from .rest import ServerAPI
from .ssh_files import host_name


def stored_for(hub: str, ssh_dir: str, name: str | None) -> tuple[str, str] | None:
    """(token file, NAME) config-ssh stored for hub, the newest one if several."""
    candidates = []
    for path in glob.glob(os.path.join(ssh_dir, "jupyter-sshd-proxy", "*.hub.json")):
        token_file = path[: -len(".hub.json")] + ".token"
        info = read_info(token_file)
        if info.get("hub") != hub or not os.path.exists(token_file):
            continue
        if name is not None and info.get("name") != name:
            continue
        stored_name = info.get("name")
        if isinstance(stored_name, str):
            candidates.append((os.path.getmtime(token_file), token_file, stored_name))
    if not candidates:
        return None
    _, token_file, stored_name = max(candidates)
    return token_file, stored_name


def ssh_ready(url: str, token: str, ca_file: str | None) -> tuple[bool, str | None]:
    """(whether ssh can connect, why not) from the server's status endpoint."""
    try:
        status = ServerAPI(url, token, timeout=10, ca_file=ca_file).get(
            "sshd-proxy/api/status", "sshd-proxy status endpoint"
        )
    except ClientError as error:
        return False, untrusted.printable(error, 200)
    problem = status.get("last_error")
    if problem:
        return False, untrusted.printable(problem, 200)
    return True, None


class ServerRow(TypedDict):
    """One of the user's servers, as `servers` shows it (and --json writes it)."""

    server: str  # its name; "" for the default server
    ssh: str  # the ssh host name config-ssh gives it
    state: str  # running, starting, stopping or stopped
    last_activity: str | None  # as the Hub says it (ISO 8601, UTC)
    ssh_ready: bool | None  # None: not asked (the server is not running)
    problem: str | None  # why ssh is not ready


def list_servers(
    url: str,
    token_file: str | None,
    ca_file: str | None,
    name: str | None,
    ssh_dir: str,
) -> list[ServerRow]:
    base = hub_url(url)
    stored = None if token_file else stored_for(base, ssh_dir, name)
    try:
        token = read_token(token_file or (stored[0] if stored else None))
    except ProxyError:
        if stored is None and not token_file:
            msg = (
                f"no token for {base}: run `jupyter-sshd-proxy config-ssh {base} --name NAME` "
                "first, or set JUPYTER_SSHD_PROXY_TOKEN"
            )
            raise ProxyError(msg) from None
        raise
    name = name or (stored[1] if stored else host_name(base))
    me = Hub(base, token, ca_file=ca_file).whoami()
    for line in me.left_out:
        print(f"jupyter-sshd-proxy: {untrusted.printable(line, 300)}", file=sys.stderr)
    if me.servers is None:
        msg = (
            f"the token may not read {me.user}'s servers (it needs the scope "
            f"read:servers!user={me.user})"
        )
        raise APIError(msg)
    rows: list[ServerRow] = []
    for server in sorted(me.servers.values(), key=lambda s: s.name):
        ready, problem = None, None
        if server.state == "running":
            ready, problem = ssh_ready(base + server_path(me.user, server.name), token, ca_file)
        rows.append(
            {
                "server": server.name,
                "ssh": ssh_name(name, server.name),
                "state": server.state,
                "last_activity": server.last_activity,
                "ssh_ready": ready,
                "problem": problem,
            }
        )
    return rows


def print_table(rows: list[ServerRow], out: TextIO) -> None:
    header = ("SERVER", "SSH", "STATE", "LAST ACTIVITY", "SSH READY")
    table = [header]
    for row in rows:
        when = row["last_activity"]
        when = f"{when[:10]} {when[11:16]} UTC" if when else "-"
        ready = {True: "yes", False: "no", None: "-"}[row["ssh_ready"]]
        if row["problem"]:
            ready += f": {row['problem']}"
        table.append((row["server"] or "(default)", row["ssh"], row["state"], when, ready))
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line, widths)]
        out.write("  ".join([*cells, line[-1]]).rstrip() + "\n")


def main_servers(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from .config_ssh import default_ssh_config

    ssh_dir = os.path.dirname(os.path.abspath(args.ssh_config or default_ssh_config()))
    rows = list_servers(args.url, args.token_file, args.ca_file, args.name, ssh_dir)
    if args.json:
        out.write(json.dumps(rows, indent=1) + "\n")
    else:
        print_table(rows, out)
    return 0
