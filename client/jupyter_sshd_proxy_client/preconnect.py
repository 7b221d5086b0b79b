"""The ProxyCommand's TCP connection, opened before the command line is parsed.

`python -m jupyter_sshd_proxy_client proxy ...` (what config-ssh writes)
starts it from __main__, before the command line module, argparse and the
ProxyCommand's code are imported (some 20 ms): over a link with a round trip
of tens of milliseconds, that much sooner connected. Only for the command
lines config-ssh writes; anything else is left to the command line. It
resolves and connects, and sends nothing: EarlySocket takes the socket if
it is for the host and port of the URL the command line accepted, and
connects itself otherwise (and on any error here, so that errors are said
as always). Not where a proxy is configured (proxy_configured()).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

WITH_VALUE = frozenset({"--token-file", "--ca-file", "--ping-interval", "--user", "--name"})
FLAGS = frozenset({"--start"})
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
TIMEOUT = 10  # seconds, as open_websocket()'s

_started: dict[tuple[str, int], tuple[threading.Thread, list[socket.socket]]] = {}


def start(args: list[str]) -> None:
    """Connect, in a thread, to the host of the URL in `proxy` args (after "proxy")."""
    if proxy_configured():
        return
    positional = []
    rest = iter(args)
    for arg in rest:
        if arg in WITH_VALUE:
            next(rest, None)
        elif arg not in FLAGS:
            if arg.startswith("-"):  # --help, --token-file=F, ...: the command line's
                return
            positional.append(arg)
    if not positional:
        return
    address = _address(positional[0])
    if address is None:
        return
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
