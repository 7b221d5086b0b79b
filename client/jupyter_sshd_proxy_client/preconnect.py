"""The ProxyCommand's TCP connection, opened before the command line is parsed.

`python -m jupyter_sshd_proxy_client proxy ...` (what config-ssh writes)
starts it from __main__, before the ProxyCommand's code is imported (some
10 ms): over a link with a round trip of tens of milliseconds, that much
sooner connected. Only for the command lines config-ssh writes (parse());
anything else is left to the command line. It resolves and connects, and
sends nothing: EarlySocket takes the socket if it is for the host and port
of the URL the command line accepted, and connects itself otherwise (and on
any error here, so that errors are said as always). Not where a proxy is
configured (proxy_configured()).

parse() also spares those command lines argparse: importing it and building
every command's parser (its help formatter imports shutil, and with it bz2
and lzma) took some 5 ms of every ssh connection's start.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

TYPE_CHECKING = False  # (typing itself is imported later: by websockets)
if TYPE_CHECKING:
    from typing import Any

# The proxy command's options, as cli.build_parser() has them (a test compares).
WITH_VALUE = frozenset({"--token-file", "--ca-file", "--ping-interval", "--user", "--name"})
FLAGS = frozenset({"--start"})
DEFAULTS: dict[str, Any] = {
    "url": None, "host": None, "user": None, "name": None, "token_file": None,
    "ca_file": None, "start": False, "ping_interval": 30.0,
}  # fmt: skip
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
TIMEOUT = 10  # seconds, as open_websocket()'s

_started: dict[tuple[str, int], tuple[threading.Thread, list[socket.socket]]] = {}


def parse(args: list[str]) -> dict[str, Any] | None:
    """The `proxy` args (after "proxy") as the command line's parser takes
    them, for the form config-ssh writes: options spelled out in full, each
    value in the word after it (not starting with -), then the URL and, for
    a Hub's block, the host name. None for anything else (--help, --opt=VALUE,
    an abbreviation, an option after the URL, a bad number): argparse then
    parses them, and says what is wrong as always."""
    parsed = dict(DEFAULTS)
    positional: list[str] = []
    words = iter(args)
    for word in words:
        if not word.startswith("-"):
            positional.append(word)
            continue
        if positional:
            return None
        if word in FLAGS:
            parsed[word[2:]] = True
        elif word in WITH_VALUE:
            value = next(words, None)
            if value is None or value.startswith("-"):
                return None
            parsed[word[2:].replace("-", "_")] = value
        else:
            return None
    if not 1 <= len(positional) <= 2:
        return None
    parsed["url"] = positional[0]
    parsed["host"] = positional[1] if len(positional) == 2 else None
    if isinstance(parsed["ping_interval"], str):
        try:
            parsed["ping_interval"] = float(parsed["ping_interval"])
        except ValueError:
            return None
    return parsed


def start(args: list[str]) -> dict[str, Any] | None:
    """parse(args); for those, connect in a thread to the host of their URL."""
    parsed = parse(args)
    if parsed is None or proxy_configured():
        return parsed
    address = _address(parsed["url"])
    if address is None:
        return parsed
    connected: list[socket.socket] = []

    # The host as bytes: getaddrinfo() takes them as they are, where a str goes
    # through the IDNA codec (imported for it, and a UnicodeError, not an
    # OSError, for an empty label such as a..b: a traceback from this thread).
    host, port = address
    ascii_address = (host.encode("ascii"), port)

    def connect() -> None:
        with contextlib.suppress(OSError):  # EarlySocket tries again, and says why it failed
            sock = socket.create_connection(ascii_address, timeout=TIMEOUT)  # type: ignore[arg-type]
            connected.append(sock)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    _started[address] = (thread, connected)
    return parsed


def proxy_configured() -> bool:
    """Whether websockets may connect through a proxy (it then opens the socket
    itself). It takes urllib.request's settings: every <scheme>_proxy variable
    with a value (https_proxy, and also ws_proxy, wss_proxy, socks_proxy, in
    any case), and where there is none, on macOS and Windows, the system's
    settings (which cost importing urllib.request to read). Connecting
    straight to the server there would bypass the proxy the user set."""
    for name, value in os.environ.items():
        lower = name.lower()
        if value and lower.endswith("_proxy") and lower != "no_proxy":
            return True
    if sys.platform == "darwin" or os.name == "nt":
        import urllib.request

        return any(scheme != "no" for scheme in urllib.request.getproxies())
    return False


def _address(url: str) -> tuple[str, int] | None:
    """The (host, port) that the command line will connect to for url, or None
    where it may not (it would refuse url, or spell its host otherwise: IDNA
    for other letters): nowhere else, not even for a moment (ftp://h:21/, a
    port 0 that is not port 80)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if (
        parts.scheme not in DEFAULT_PORTS
        or not host
        or not host.isascii()
        or "%" in host
        or "@" in parts.netloc
        or port == 0
    ):
        return None
    return host, DEFAULT_PORTS[parts.scheme] if port is None else port


def take(address: tuple[str, int]) -> socket.socket | None:
    """The socket connected to address by start(), once; else None."""
    started = _started.pop(address, None)
    if started is None:
        return None
    thread, connected = started
    thread.join()
    return connected[0] if connected else None
