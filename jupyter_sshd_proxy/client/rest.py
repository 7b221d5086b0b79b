"""Client side of the REST endpoints (<server>/sshd-proxy/api/...), stdlib only.

Redirects are never followed: on JupyterHub a redirect means the user's server
is not running, and that is what the user must be told.

The server is not trusted (see untrusted.py): an answer larger than
MAX_ANSWER is refused rather than read into memory, get() returns only a JSON
object, and a message the server sends is made printable before it goes
into an error line. Each call has a deadline for the whole answer (not only
for each read: a server that drips one byte at a time would otherwise hold us
for ever): a watchdog shuts the connection's socket when it passes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from ..errors import APIError, TLSError, UntrustedAnswer
from . import tls
from .untrusted import SUSPICIOUS, printable
from .urls import server_url

MAX_ANSWER = 1024 * 1024  # bytes; the largest real answer (authorized keys) is far smaller
MAX_LINE = 64 * 1024  # bytes per line of an event stream
READ = 64 * 1024  # bytes asked of each read of an answer
Connection = TypeVar("Connection", bound=http.client.HTTPConnection)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> None:
        return None


class Deadline:
    """The end of one request: a watchdog shuts down the sockets it watches then,
    which ends any read that is waiting on them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)
        return sock

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.end

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    """shutdown(2) on sock's descriptor, as it is (an SSLSocket's shutdown() would
    change its TLS state under the thread that reads it)."""
    with contextlib.suppress(OSError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watched(connection_class: type[Connection], deadline: Deadline) -> type[Connection]:
    """connection_class whose sockets (the TCP one, then the TLS one) deadline watches."""

    class Watched(connection_class):  # type: ignore[misc, valid-type]  # a base known at run time
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            connect = self._create_connection
            self._create_connection: Callable[..., socket.socket] = lambda *a, **k: deadline.watch(
                connect(*a, **k)
            )

        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    return Watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self._deadline = deadline
        self._tls_context = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = _watched(http.client.HTTPSConnection, self._deadline)
        return self.do_open(connection, req, context=self._tls_context)


class ServerAPI:
    def __init__(
        self, url: str, token: str, timeout: float = 10, ca_file: str | None = None
    ) -> None:
        self.base = server_url(url)
        self._token = token
        self.timeout = timeout  # seconds for the whole answer
        self._context = tls.context(ca_file)

    def _open(
        self, request: urllib.request.Request, deadline: Deadline
    ) -> http.client.HTTPResponse:
        opener = urllib.request.build_opener(
            _NoRedirect(), _HTTPHandler(deadline), _HTTPSHandler(deadline, self._context)
        )
        response: http.client.HTTPResponse = opener.open(request, timeout=deadline.seconds)
        return response

    def _request(self, method: str, path: str, data: bytes | None = None) -> urllib.request.Request:
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if self._token:  # (none: a question anyone may ask, such as the Hub's version)
            request.add_header("Authorization", f"token {self._token}")
        return request

    def call(
        self, method: str, path: str, body: dict[str, object] | None = None
    ) -> tuple[int, object]:
        """(status, decoded JSON or None). Raises APIError for transport failures."""
        data = json.dumps(body).encode() if body is not None else None
        request = self._request(method, path, data)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        deadline = Deadline(self.timeout)
        response: http.client.HTTPResponse | urllib.error.HTTPError
        try:
            try:
                response = self._open(request, deadline)
                status = response.status
            except urllib.error.HTTPError as error:
                if error.code in REDIRECTS:
                    error.close()
                    return error.code, {"location": error.headers.get("Location")}
                # The status says what went wrong; the body may add why, if it
                # comes whole (read outside this clause: a failure there is ours).
                response, status = error, error.code
            with response:
                try:
                    answer = self._read(response, path, deadline)
                except (OSError, http.client.HTTPException):
                    if status < 400:
                        raise
                    answer = b""
            return status, _json(answer)
        except urllib.error.URLError as error:
            raise self._failure(error.reason, deadline) from None
        except (OSError, http.client.HTTPException) as error:
            raise self._failure(error, deadline) from None
        finally:
            deadline.cancel()

    def _read(
        self,
        response: http.client.HTTPResponse | urllib.error.HTTPError,
        path: str,
        deadline: Deadline,
    ) -> bytes:
        """The whole body, at most MAX_ANSWER bytes, before the deadline."""
        chunks, size = [], 0
        while chunk := response.read1(READ):
            size += len(chunk)
            if size > MAX_ANSWER:
                msg = f"{self.base} answered {path} with more than 1 MiB; {SUSPICIOUS}"
                raise UntrustedAnswer(msg)
            chunks.append(chunk)
            if deadline.passed():
                break
        if deadline.passed():
            raise TimeoutError
        if getattr(response, "length", None):  # it promised more than it sent
            raise http.client.IncompleteRead(b"".join(chunks), response.length)
        return b"".join(chunks)

    def _failure(self, reason: object, deadline: Deadline | None = None) -> APIError | TLSError:
        """The error for a request that got no answer (reason: the exception)."""
        parts = urlsplit(self.base)
        if isinstance(reason, ssl.SSLError):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            return TLSError(tls.explain(reason, parts.hostname, port))
        if isinstance(reason, socket.timeout) or (deadline is not None and deadline.passed()):
            # socket.timeout: TimeoutError since Python 3.10
            seconds = deadline.seconds if deadline is not None else self.timeout
            return APIError(f"no complete answer from {self.base} within {seconds:g}s")
        if isinstance(reason, http.client.HTTPException):
            text = f"{type(reason).__name__} ({printable(reason, 100)})"
            return APIError(f"{self.base} broke off its answer: {text}")
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return APIError(f"cannot reach {self.base}: {printable(text, 200)}")

    def lines(self, path: str, timeout: float, expired: str) -> Iterator[str]:
        """The lines of a streamed answer (an event stream), as they come, for at
        most timeout seconds in all; then APIError(expired)."""
        request = self._request("GET", path)
        request.add_header("Accept", "text/event-stream")
        deadline = Deadline(timeout)
        try:
            with self._open(request, deadline) as response:
                while (line := response.readline(MAX_LINE)) and not deadline.passed():
                    yield line.decode(errors="replace").rstrip("\r\n")
        except urllib.error.HTTPError as error:
            raise APIError(explain(error.code, self.base, path), error.code) from None
        except urllib.error.URLError as error:
            if deadline.passed():
                raise APIError(expired) from None
            raise self._failure(error.reason) from None
        except (OSError, http.client.HTTPException) as error:
            if deadline.passed():
                raise APIError(expired) from None
            msg = f"lost {self.base}{path}: {printable(error, 200)}"
            raise APIError(msg) from None
        finally:
            deadline.cancel()
        if deadline.passed():
            raise APIError(expired)

    def get(self, path: str, what: str) -> dict[str, Any]:
        """The JSON object a GET answers with status 200; anything else is an error."""
        status, body = self.call("GET", path)
        if status != 200:
            location = body.get("location") if isinstance(body, dict) else None
            raise APIError(explain(status, self.base, what, body, location, path), status)
        if not isinstance(body, dict):
            msg = (
                f"{self.base} answered the {what} with something that is not a JSON object; "
                + SUSPICIOUS
            )
            raise UntrustedAnswer(msg)
        return body


def _json(data: bytes) -> object:
    try:
        return json.loads(data) if data else None
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return None


# What JupyterHub answers for a user's server that is not running: a redirect
# to /hub/user/NAME/..., which then answers 424 (503 while it is starting).
REDIRECTS = (301, 302, 303, 307, 308)


def server_not_running(status: int, location: str | None) -> bool:
    return status in (424, 503) or (status in REDIRECTS and "/hub/" in (location or ""))


def redirected_to_https(base: str, location: str | None, path: str = "") -> str | None:
    """The https:// URL to use instead of base (http:// or ws://), when a request
    for base + path was redirected to https:// (an ingress that moves every
    http request to https); None for any other redirect."""
    if not location or not location.lower().startswith("https://"):
        return None
    if not base.startswith(("http://", "ws://")):
        return None
    target = location.split("?", 1)[0].split("#", 1)[0]
    if path and target.endswith("/" + path.lstrip("/")):
        target = target[: len(target) - len(path.lstrip("/"))]
    return printable(target, 200)


def explain(
    status: int,
    base: str,
    what: str,
    body: object = None,
    location: str | None = None,
    path: str = "",
) -> str:
    """One line for a failed call, naming the fix; what the server said is made printable."""
    message = body.get("message") if isinstance(body, dict) else None
    said = printable(message, 300) if isinstance(message, str) else ""
    if status in (401, 403) and said and said != http.client.responses[status]:
        # Our API says why (e.g. changing keys needs the right to open a terminal).
        return f"the server refused ({status}) the {what} at {base}: {said}"
    if status == 403 and what == "sshd route":
        # A refused WebSocket upgrade says nothing more than its status.
        return (
            f"the server refused the connection (403) for {base}: get a new token and try "
            "again; if that does not help, this user may not open a terminal, which ssh needs"
        )
    if status in (401, 403):
        return f"the server refused the token ({status}) for {base}; get a new token and try again"
    if server_not_running(status, location):
        return (
            f"the Jupyter server at {base} is not running ({status}); start it from the Hub, "
            "or connect with `jupyter-sshd-proxy proxy --start`"
        )
    https = redirected_to_https(base, location, path) if status in REDIRECTS else None
    if https is not None:
        return f"{base} redirected to {https} ({status}): use that URL"
    if status in REDIRECTS:
        return (
            f"no {what} at {base}: it redirected to {printable(location, 200)} ({status}); "
            "install jupyter-sshd-proxy in the Jupyter server's environment and restart the "
            "server, or check the URL"
        )
    if status == 404:
        return (
            f"{base} has no {what} (404): install jupyter-sshd-proxy in the Jupyter "
            "server's environment and restart the server"
        )
    return f"{base} answered {status} for {what}" + (f": {said}" if said else "")
