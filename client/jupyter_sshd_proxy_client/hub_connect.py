"""`ssh NAME.SERVER` through a Hub: which server, and one line when it cannot be reached.

config-ssh with a Hub's URL writes a ProxyCommand that gets the Hub, the
user and NAME, and, last, the host name ssh was given (%n for servers made
later). The server comes from that name; its URL from the Hub's.

When the WebSocket cannot be opened, the Hub is asked why, in this order:
the token (expired: the date and the command that renews it), the server
(none of that name: it is never made by connecting; stopped or starting),
then, where config-ssh was given --start, the server is started with its
progress shown. Only on failure: a working connection asks the Hub nothing,
and imports nothing to ask it with (hub.py, rest.py: urllib.request).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import HubError, ProxyError
from .hub_urls import HUB_USER, hub_url, server_of_host, server_path, ssh_name

if TYPE_CHECKING:  # hub.py brings rest.py (urllib.request): only when a connection fails
    from .hub import Hub


@dataclass
class HubTarget:
    """The Hub's URL, its user, config-ssh's NAME and the host name ssh was given."""

    hub: str
    user: str
    name: str
    host: str
    token_file: str | None
    ca_file: str | None = None
    start: bool = False

    def __post_init__(self) -> None:
        self.hub = hub_url(self.hub)
        if not HUB_USER.fullmatch(self.user):
            msg = f"--user {self.user!r} is not a Hub user name"
            raise ProxyError(msg)
        self.server = server_of_host(self.name, self.host)

    @property
    def url(self) -> str:
        return self.hub + server_path(self.user, self.server)

    @property
    def ssh(self) -> str:
        return ssh_name(self.name, self.server)

    def renew(self) -> str:
        """The command that gets a new token for this block."""
        command = f"jupyter-sshd-proxy config-ssh {self.hub} --name {self.name}"
        command += " --start" if self.start else ""
        return command + (f" --ca-file {self.ca_file}" if self.ca_file else "")

    def servers_command(self) -> str:
        return f"jupyter-sshd-proxy servers {self.hub}"


def token_problem(target: HubTarget, hub: Hub) -> str | None:
    """One line if the Hub no longer takes the token (expired or revoked), else None."""
    from .hub import expired, expiry_text, read_info

    try:
        hub.whoami()
    except HubError as error:
        if error.status not in (401, 403):
            return None
    else:
        return None
    info = read_info(target.token_file) if target.token_file else {}
    when = expiry_text(info.get("expires_at"))
    if when and expired(info.get("expires_at")):
        return f"the token for {target.name} expired on {when}; renew it with: {target.renew()}"
    return (
        f"the Hub at {target.hub} no longer accepts the token for {target.name} (it was "
        f"revoked, or has expired); renew it with: {target.renew()}"
    )


def why_not_running(target: HubTarget, token: str, progress: Callable[[str], None]) -> None:
    """The server did not answer (the Hub redirected): say why in one line, or,
    with --start, start it and return once it is ready."""
    from .hub import Hub

    hub = Hub(target.hub, token, ca_file=target.ca_file)
    problem = token_problem(target, hub)
    if problem:
        raise ProxyError(problem)
    from .hub_start import start_named

    state = hub.server_state(target.user, target.server)
    if state is None:
        msg = (
            f"{target.ssh}: {target.user} has no server named {target.server!r} on the Hub "
            f"(connecting never makes one); see `{target.servers_command()}`"
        )
        raise ProxyError(msg)
    if state == "running":
        return  # it came up meanwhile: connect again
    if not target.start:
        how = (
            "it is starting; connect again in a moment"
            if state == "starting"
            else f"start it from {target.hub}hub/home, or run config-ssh again with --start "
            "to have ssh start it"
        )
        which = target.server or "(default)"
        msg = f"{target.ssh}: {target.user}'s server {which} is {state}; {how}"
        raise ProxyError(msg)
    start_named(hub.api, target.user, target.server, progress)


def why_failed(
    target: HubTarget, token: str, error: ProxyError, progress: Callable[[str], None]
) -> None:
    """Any other refused handshake: the token's line if it is the token; for a
    redirect or a 404 (a server the Hub's proxy has no route to: stopped, or
    never started), the server's state as for why_not_running; else error."""
    if error.status is None:  # no HTTP answer (refused, timed out): nothing to ask the Hub
        raise error
    from .hub import Hub
    from .rest import REDIRECTS

    if error.status in (401, 403):
        problem = token_problem(target, Hub(target.hub, token, ca_file=target.ca_file))
        raise ProxyError(problem) if problem else error
    if error.status not in (*REDIRECTS, 404):
        raise error
    why_not_running(target, token, progress)
