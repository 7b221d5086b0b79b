"""Client side of the REST endpoints (<server>/sshd-proxy/api/...), stdlib only.

Redirects are never followed: on JupyterHub a redirect means the user's server
is not running, and that is what the user must be told.

The server is not trusted (see untrusted.py): an answer larger than
MAX_ANSWER is refused rather than read into memory, get() returns only a JSON
object, and a message the server sends is made printable before it goes
into an error line.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

from ..errors import APIError, TLSError, UntrustedAnswer
from . import tls
from .untrusted import SUSPICIOUS, printable
from .urls import server_url

MAX_ANSWER = 1024 * 1024  # bytes; the largest real answer (authorized keys) is far smaller
MAX_LINE = 64 * 1024  # bytes per line of an event stream


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl) -> None:
        return None


class ServerAPI:
    def __init__(
        self, url: str, token: str, timeout: float = 10, ca_file: str | None = None
    ) -> None:
        self.base = server_url(url)
        self._token = token
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        context = tls.context(ca_file)
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def _request(self, method: str, path: str, data: bytes | None = None) -> urllib.request.Request:
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"token {self._token}")
        return request

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        """(status, decoded JSON or None). Raises APIError for transport failures."""
        data = json.dumps(body).encode() if body is not None else None
        request = self._request(method, path, data)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, _json(self._read(response, path))
        except urllib.error.HTTPError as error:
            if error.code in REDIRECTS:
                return error.code, {"location": error.headers.get("Location")}
            return error.code, _json(self._read(error, path))
        except urllib.error.URLError as error:
            raise self._failure(error.reason) from None
        except (OSError, http.client.HTTPException) as error:
            raise self._failure(error) from None

    def _read(
        self, response: http.client.HTTPResponse | urllib.error.HTTPError, path: str
    ) -> bytes:
        data = response.read(MAX_ANSWER + 1)
        if len(data) > MAX_ANSWER:
            msg = f"{self.base} answered {path} with more than 1 MiB; {SUSPICIOUS}"
            raise UntrustedAnswer(msg)
        return data

    def _failure(self, reason: object) -> APIError | TLSError:
        """The error for a request that got no answer (reason: the exception)."""
        parts = urlsplit(self.base)
        if isinstance(reason, ssl.SSLError):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            return TLSError(tls.explain(reason, parts.hostname, port))
        if isinstance(reason, socket.timeout):  # TimeoutError since Python 3.10
            return APIError(f"no answer from {self.base} within {self.timeout:g}s")
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return APIError(f"cannot reach {self.base}: {text}")

    def lines(self, path: str, timeout: float) -> Iterator[str]:
        """The lines of a streamed answer (an event stream), as they come."""
        request = self._request("GET", path)
        request.add_header("Accept", "text/event-stream")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                while line := response.readline(MAX_LINE):
                    yield line.decode(errors="replace").rstrip("\r\n")
        except urllib.error.HTTPError as error:
            raise APIError(explain(error.code, self.base, path), error.code) from None
        except urllib.error.URLError as error:
            raise self._failure(error.reason) from None
        except (OSError, http.client.HTTPException) as error:
            msg = f"lost {self.base}{path}: {error}"
            raise APIError(msg) from None

    def get(self, path: str, what: str) -> dict:
        """The JSON object a GET answers with status 200; anything else is an error."""
        status, body = self.call("GET", path)
        if status != 200:
            location = body.get("location") if isinstance(body, dict) else None
            raise APIError(explain(status, self.base, what, body, location), status)
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


def explain(
    status: int, base: str, what: str, body: object = None, location: str | None = None
) -> str:
    """One line for a failed call, naming the fix; what the server said is made printable."""
    if status in (401, 403):
        return f"the server refused the token ({status}) for {base}; get a new token and try again"
    if server_not_running(status, location):
        return (
            f"the Jupyter server at {base} is not running ({status}); start it from the Hub, "
            "or connect with `jupyter-sshd-proxy proxy --start`"
        )
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
    message = body.get("message") if isinstance(body, dict) else None
    said = printable(message, 300) if message else ""
    return f"{base} answered {status} for {what}" + (f": {said}" if said else "")
