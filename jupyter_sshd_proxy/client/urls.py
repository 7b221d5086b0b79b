"""Server URLs as users give them, and the URLs we derive from them.

A URL goes into ~/.ssh/config (in the ProxyCommand) and into error lines, so
one with white space or a control character in it is refused here, once.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ..errors import BadURLError

HTTP_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def server_url(url: str) -> str:
    """The server's base URL: http(s), a trailing slash, no sshd/ suffix, no query."""
    if not url.isprintable() or any(char.isspace() for char in url):
        msg = (
            f"{url!r} is not a server URL: it has white space or control characters in it; "
            "give one like https://hub.example.org/user/NAME/"
        )
        raise BadURLError(msg)
    parts = urlsplit(url)
    if parts.scheme not in HTTP_SCHEMES or not parts.netloc:
        msg = f"{url!r} is not a server URL; give one like https://hub.example.org/user/NAME/"
        raise BadURLError(msg)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    if path.endswith("/sshd/"):
        path = path[: -len("sshd/")]
    return urlunsplit((HTTP_SCHEMES[parts.scheme], parts.netloc, path, "", ""))


def websocket_url(url: str) -> str:
    """ws(s)://.../sshd/ for a server URL given with or without the trailing sshd/."""
    base = server_url(url)
    scheme, rest = base.split(":", 1)
    return ("wss" if scheme == "https" else "ws") + ":" + rest + "sshd/"
