"""Start the user's server through the JupyterHub API (`proxy --start`).

The Hub's progress messages are printed on the user's terminal as they come:
like everything a server sends, they are made printable first (no escape
sequences), and an event that is not a JSON object is skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from ..errors import HubError
from .rest import ServerAPI, explain
from .untrusted import printable
from .urls import server_url

USER_PATH = re.compile(r"^(?P<prefix>.*/)user/(?P<user>[^/]+)/(?:(?P<server>[^/]+)/)?$")
START_TIMEOUT = 300  # seconds; slow spawners (Kubernetes pulling an image) take minutes


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
    """Ask the Hub to start the server, report its progress, return once it is ready."""
    api_base, user, path = hub_api(url)
    api = ServerAPI(api_base, token, timeout=30, ca_file=ca_file)
    code, body = api.call("POST", path)
    if code == 403:
        msg = (
            f"the token may not start {user}'s server (403): it needs the scope "
            f"servers!user={user} (a token from the Hub's token page has it)"
        )
        raise HubError(msg)
    if code not in (201, 202, 400):  # 400: already running or starting
        raise HubError(explain(code, api_base + path, "server start", body))
    progress(f"jupyter-sshd-proxy: starting {user}'s server on the Hub ...")
    for line in api.lines(path + "/progress", timeout=START_TIMEOUT):
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
            msg = f"the Hub could not start {user}'s server: {message}"
            raise HubError(msg)
        progress(f"jupyter-sshd-proxy: [{printable(event.get('progress', '?'), 10)}%] {message}")
        if event.get("ready"):
            return
    msg = f"the Hub stopped reporting before {user}'s server was ready; try again"
    raise HubError(msg)
