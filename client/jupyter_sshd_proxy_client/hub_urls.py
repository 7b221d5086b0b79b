"""A Hub's URLs and names, as `ssh NAME.SERVER` needs them on every connection.

The ProxyCommand of config-ssh's Hub block turns the Hub's URL, the user and
the host name ssh was given into the server's URL, then connects: it asks
the Hub's API nothing unless the connection fails (hub.py, through rest.py,
with urllib.request and http.client). So this module imports only what
urls.py does: the names are checked here, once, with the rules config-ssh
used to write them.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

from .errors import BadURLError, HubError
from .untrusted import shown
from .urls import server_url

# JupyterHub's user names: letters, digits and what e-mail addresses and
# LDAP names bring ('.', '_', '@', '+', '-'), not starting with a punctuation
# mark. Nothing a shell, ssh_config or a URL path reads as more than a name.
HUB_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
HUB_USER_RULE = "letters, digits, '.', '_', '@', '+' and '-', at most 128 characters"
# A server name becomes the last label of NAME.SERVER: a host name label
# without a dot (the dot separates it from NAME), starting with a letter or
# digit. JupyterHub 6 allows only lower-case letters, digits and '-' (1-30).
SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
SERVER_NAME_RULE = "letters, digits, '_' and '-', starting with a letter or digit, at most 63"
HUB_EXAMPLE = "give the Hub's own URL, like https://hub.example.org/"


def hub_url(url: str) -> str:
    """The Hub's base URL (scheme, host, base_url, a trailing slash), from the URL
    of its home page (https://hub.example.org/ or .../hub/ or .../hub/home)."""
    base = server_url(url)
    parts = urlsplit(base)
    path = parts.path
    for tail in ("hub/home/", "hub/token/", "hub/spawn/", "hub/"):
        if path.endswith("/" + tail):
            path = path[: -len(tail)]
            break
    if "/user/" in path:
        msg = f"{base} is a server's URL, not the Hub's; {HUB_EXAMPLE}"
        raise BadURLError(msg)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def is_user_url(url: str) -> bool:
    """Whether url names one user's server (.../user/NAME/...)."""
    return "/user/" in urlsplit(server_url(url)).path


def server_path(user: str, server: str) -> str:
    """The path of user's server under the Hub's base URL: user/NAME/ or user/NAME/SERVER/."""
    path = f"user/{quote(user, safe='@+')}/"
    return path + (f"{quote(server, safe='')}/" if server else "")


def server_api_path(user: str, server: str) -> str:
    """The Hub API path of user's server: users/NAME/server or users/NAME/servers/SERVER."""
    where = f"servers/{quote(server, safe='')}" if server else "server"
    return f"users/{quote(user, safe='@+')}/{where}"


def server_of_host(name: str, host: str) -> str:
    """The server that the ssh host name stands for: NAME is the default server
    (""), NAME.SERVER the named server SERVER; HubError for any other name."""
    if host == name:
        return ""
    server = host[len(name) + 1 :] if host.startswith(name + ".") else None
    if server is None or not SERVER_NAME.fullmatch(server):
        msg = (
            f"{shown(host, 80)} is not {name} or {name}.SERVER with a server name of "
            f"{SERVER_NAME_RULE}"
        )
        raise HubError(msg)
    return server


def ssh_name(name: str, server: str) -> str:
    return f"{name}.{server}" if server else name
