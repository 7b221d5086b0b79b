"""Start the user's server through the JupyterHub API (`proxy --start`).

A server that does not exist is never made by connecting: the Hub's POST
would make a named server of any name, so its existence is asked first.

The Hub's progress messages are printed on the user's terminal as they come:
like everything a server sends, they are made printable first (no escape
sequences), and an event that is not a JSON object is skipped. It waits
START_TIMEOUT seconds in all, however busily the Hub keeps reporting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import HubError
from .hub import Hub
from .hub_urls import server_api_path
from .rest import ServerAPI, explain
from .untrusted import printable
from .urls import server_url

USER_PATH = re.compile(r"^(?P<prefix>.*/)user/(?P<user>[^/]+)/(?:(?P<server>[^/]+)/)?$")
START_TIMEOUT = 300  # seconds in all; slow spawners (Kubernetes pulling an image) take minutes


def hub_api(url: str) -> tuple[str, str, str]:
    """(Hub API base URL, user name, server path under users/NAME) for a /user/NAME/ URL."""
    base = server_url(url)
    parts = urlsplit(base)
    match = USER_PATH.match(parts.path)
    if not match:
        msg = f"{base} is not a JupyterHub user server URL (.../user/NAME/): --start needs one"
        raise HubError(msg)
    api = urlunsplit((parts.scheme, parts.netloc, match["prefix"] + "hub/api/", "", ""))
    server = f"servers/{match['server']}" if match["server"] else "server"
    return api, match["user"], f"users/{match['user']}/{server}"


def start_server(
    url: str, token: str, progress: Callable[[str], None], ca_file: str | None = None
) -> None:
    """Ask the Hub to start the server of a /user/NAME/[SERVER/] URL, report its
    progress, return once it is ready. A named server that does not exist is
    not made: that is one line."""
    api_base, encoded_user, path = hub_api(url)
    user = unquote(encoded_user)
    server = unquote(path.split("/servers/", 1)[1]) if "/servers/" in path else ""
    hub = Hub(api_base[: -len("hub/api/")], token, ca_file=ca_file)
    if server and hub.server_state(user, server) is None:
        msg = (
            f"{user} has no server named {printable(server, 80)!r} on the Hub (connecting "
            "never makes one); make it from the Hub's home page first"
        )
        raise HubError(msg)
    start_named(hub.api, user, server, progress)


def start_named(api: ServerAPI, user: str, server: str, progress: Callable[[str], None]) -> None:
    """POST the start of user's server (the default one for ""), then follow its progress."""
    path = server_api_path(user, server)
    api_base = api.base
    whose = f"{user}'s server" + (f" {server}" if server else "")
    code, body = api.call("POST", path)
    if code == 403:
        msg = (
            f"the token may not start {whose} (403): it needs the scope "
            f"servers!user={user} (a token from the Hub's token page has it; config-ssh "
            "with the Hub's URL asks for it with --start)"
        )
        raise HubError(msg, code)
    if code not in (201, 202, 400):  # 400: already running or starting
        raise HubError(explain(code, api_base + path, "server start", body), code)
    progress(f"jupyter-sshd-proxy: starting {whose} on the Hub ...")
    expired = (
        f"{whose} was not ready within {START_TIMEOUT:g}s; see its progress on the "
        "Hub's home page, then connect again"
    )
    for line in api.lines(path + "/progress", timeout=START_TIMEOUT, expired=expired):
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[len("data:") :])
        except (ValueError, RecursionError):
            continue
        if not isinstance(event, dict):
            continue
        message = printable(event.get("message") or "")
        if event.get("failed"):
            msg = f"the Hub could not start {whose}: {message}"
            raise HubError(msg)
        progress(f"jupyter-sshd-proxy: [{printable(event.get('progress', '?'), 10)}%] {message}")
        if event.get("ready"):
            return
    msg = f"the Hub stopped reporting before {whose} was ready; try again"
    raise HubError(msg)
