"""Server URLs as users give them, and the URLs we derive from them.

A URL goes into ~/.ssh/config (in the ProxyCommand, which ssh runs through
the user's shell: sh, bash, zsh, fish, ... or cmd.exe) and into error lines.
So server_url() makes it plain, once:

* white space and control characters are refused;
* a user name or password (user:password@) is refused, and never repeated;
* the host can only be a host name, an IPv4 address or an [IPv6] address,
  with an optional port;
* every path character outside A-Za-z0-9-._~/%:@+=, is percent-encoded (as
  UTF-8: jörg becomes j%C3%B6rg, as the browser writes it), so no shell
  reads anything special in the URL, whichever shell it is.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

from .errors import BadURLError

HTTP_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
# Path characters that stay as they are: no shell, ssh_config or cmd.exe reads
# them as more than letters (% is doubled for ssh when the URL is written).
PATH_SAFE = "-._~/%:@+=,"  # with A-Za-z0-9
EXAMPLE = "give one like https://hub.example.org/user/NAME/"
_HOST_NAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?")
_PORT = re.compile(r"[0-9]{1,5}")


def quote_path(path: str) -> str:
    """path with every character outside A-Za-z0-9 and PATH_SAFE percent-encoded."""
    return quote(path, safe=PATH_SAFE)


def server_url(url: str) -> str:
    """The server's base URL: http(s), a trailing slash, no sshd/ suffix, no query."""
    if not url.isprintable() or any(char.isspace() for char in url):
        msg = (
            f"{url!r} is not a server URL: it has white space or control characters in it; "
            + EXAMPLE
        )
        raise BadURLError(msg)
    try:
        parts = urlsplit(url)
    except ValueError:  # a [ without its ], for one
        parts = urlsplit("")
    if parts.scheme.lower() not in HTTP_SCHEMES or not parts.netloc:
        msg = f"{url!r} is not a server URL; {EXAMPLE}"
        raise BadURLError(msg)
    scheme = HTTP_SCHEMES[parts.scheme.lower()]
    if "@" in parts.netloc:
        # Never repeat what is before the @: it may be a password.
        shown = urlunsplit((scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        msg = (
            f"the URL {shown!r} has a user name or password in it (user:password@...); "
            "leave it out: the token is all the server needs"
        )
        raise BadURLError(msg)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    if path.endswith("/sshd/"):
        path = path[: -len("sshd/")]
    return urlunsplit((scheme, _host(parts.netloc, url), quote_path(path), "", ""))


def _host(netloc: str, url: str) -> str:
    """netloc as HOST[:PORT], HOST a host name (lower case, IDNA for other
    letters), an IPv4 address or an [IPv6] address; BadURLError otherwise."""
    match = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*)(?::([^:]*))?", netloc)
    host, port = (match.group(1), match.group(2)) if match else ("", None)
    if host.startswith("["):
        import ipaddress

        try:
            ipaddress.IPv6Address(host[1:-1])
            valid = "%" not in host  # no zone index (%eth0): nothing that ssh expands
        except ValueError:
            valid = False
    else:
        # An ASCII name is its own IDNA form (the codec only checks that no
        # label is empty or too long, as _HOST_NAME does): no codec import
        # (encodings.idna, stringprep, unicodedata) on every ssh connection.
        try:
            host = host.lower() if host.isascii() else host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            host = ""
        valid = bool(_HOST_NAME.fullmatch(host))
    if valid and port is not None:
        valid = bool(_PORT.fullmatch(port)) and 0 < int(port) < 65536
    if not valid:
        msg = (
            f"{url!r} is not a server URL: {netloc!r} is not a host name, an IPv4 address or "
            f"an [IPv6] address with an optional :PORT; {EXAMPLE}"
        )
        raise BadURLError(msg)
    return host + (f":{port}" if port is not None else "")


def websocket_url(url: str) -> str:
    """ws(s)://.../sshd/ for a server URL given with or without the trailing sshd/."""
    base = server_url(url)
    scheme, rest = base.split(":", 1)
    return ("wss" if scheme == "https" else "ws") + ":" + rest + "sshd/"


def is_loopback(url: str) -> bool:
    """Whether the server URL's host is this machine (localhost, 127.0.0.0/8, [::1])."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
