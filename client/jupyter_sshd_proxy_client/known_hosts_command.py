"""ssh's KnownHostsCommand for a Hub's servers: pin on first use, then only the pin.

config-ssh pins the host keys of the servers that run when it runs. A server
that was stopped then, or made afterwards, is pinned here, on the first
connection to it, the same way: its host keys come from its authenticated
API over verified TLS (never from the SSH connection itself), and are written
into config-ssh's known_hosts file. From then on that file decides: this
command never fetches again for a name that has a pin, so a host key that
changes afterwards is refused by ssh, as for any pinned host.

ssh runs this (without a shell: the %n it is given is one word) up to three
times per connection, with %I saying why:

    ORDER     before the server has spoken, to order the key types: the pin,
              if there is one; never a fetch (the server may not be up yet)
    HOSTNAME  to check the key the server showed: the pin, or the first-use fetch
    ADDRESS   (CheckHostIP): nothing; the pins are by name

The first use also authorizes the public key of the IdentityFile on that
server, as config-ssh does for the servers it finds running (not when
config-ssh gave no --identity: the Hub's certificate authority vouches for
the laptop, see certificates.py).

A failure is one line on stderr and a non-zero exit: ssh then ends the
connection. Nothing but known_hosts lines is written to stdout. ssh runs this on every
connection to a server that was pinned here: until the first use, it imports
no more than it needs to print a pin.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from .errors import HubError
from .untrusted import KNOWN_HOSTS_LINE

if TYPE_CHECKING:
    import argparse


def known_hosts_name(ssh_name: str) -> str:
    """The name ssh looks a host's keys up under (no HostKeyAlias, port 22): the
    host name as typed, in lower case."""
    return ssh_name.lower()


def pinned(known_hosts: str, name: str) -> list[str]:
    """The lines of known_hosts for name (ALIAS TYPE BASE64, checked), in order."""
    try:
        with open(known_hosts, encoding="utf-8", errors="replace") as stream:
            lines = stream.read(4 * 1024 * 1024).splitlines(keepends=True)
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        if not line.endswith("\n"):
            line += "\n"
        if line.split(" ", 1)[0] == name and KNOWN_HOSTS_LINE.fullmatch(line):
            found.append(line)
    return found


def known_hosts(args: argparse.Namespace) -> int:
    """Print the pins for the host ssh checks; pin it first if it has none."""
    name = known_hosts_name(args.host)
    if args.reason not in ("ORDER", "HOSTNAME") or args.known_name != name:
        # An address, or a name we did not pin (ssh -p PORT looks up [NAME]:PORT):
        # ssh's own files decide, as without this command.
        return 0
    lines = pinned(args.known_hosts, name)
    if lines or args.reason == "ORDER":
        sys.stdout.write("".join(lines))
        return 0
    lines = _first_use(args, name)
    sys.stdout.write("".join(lines))
    return 0


def _first_use(args: argparse.Namespace, name: str) -> list[str]:
    """Fetch the server's host keys over its authenticated API, authorize our key
    there, pin the host keys; the pinned lines."""
    from . import untrusted
    from .files import locked, write_atomically
    from .hub_connect import HubTarget
    from .proxy_command import read_token
    from .rest import ServerAPI, explain
    from .ssh_files import put_known_hosts

    target = HubTarget(args.url, args.user, args.name, args.host, args.token_file, args.ca_file)
    token = read_token(args.token_file)
    api = ServerAPI(target.url, token, ca_file=args.ca_file)
    keys = untrusted.host_keys(
        api.get("sshd-proxy/api/host-keys", "sshd-proxy host-keys endpoint"), target.url
    )
    public = args.identity + ".pub" if args.identity else None
    if public is not None and os.path.exists(public):
        with open(public, encoding="utf-8", errors="replace") as stream:
            code, body = api.call(
                "POST", "sshd-proxy/api/authorized-keys", {"key": stream.read().strip()}
            )
        if code not in (201, 409):
            location = body.get("location") if isinstance(body, dict) else None
            what, path = "sshd-proxy authorized-keys endpoint", "sshd-proxy/api/authorized-keys"
            raise HubError(explain(code, target.url, what, body, location, path), code)
    directory = os.path.dirname(args.known_hosts)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with locked(args.known_hosts):
        already = pinned(args.known_hosts, name)  # another ssh pinned it meanwhile
        if already:
            return already
        try:
            with open(args.known_hosts, "rb") as stream:
                old = stream.read().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            old = ""
        new = put_known_hosts(old, name, keys)
        write_atomically(args.known_hosts, new.encode("utf-8", "surrogateescape"), 0o644)
    print(
        f"jupyter-sshd-proxy: pinned the host keys of {target.ssh} in {args.known_hosts}",
        file=sys.stderr,
    )
    return pinned(args.known_hosts, name)
