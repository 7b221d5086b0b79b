"""Client side of the REST endpoints (<server>/sshd-proxy/api/...), stdlib only.

Redirects are never followed: on JupyterHub a redirect means the user's server
is not running, and that is what the user must be told.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from ..errors import APIError
from .urls import server_url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class ServerAPI:
    def __init__(self, url: str, token: str, timeout: float = 10):
        self.base = server_url(url)
        self._token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def auth_headers(self) -> dict:
        return {"Authorization": f"token {self._token}"}

    def call(self, method: str, path: str, body: dict | None = None):
        """(status, decoded JSON or None). Raises APIError for transport failures."""
        url = self.base + path
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        for header, value in self.auth_headers().items():
            request.add_header(header, value)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as error:
            if error.code in REDIRECTS:
                return error.code, {"location": error.headers.get("Location")}
            return error.code, _json(error.read())
        except urllib.error.URLError as error:
            reason = getattr(error.reason, "strerror", None) or str(error.reason)
            msg = f"cannot reach {self.base}: {reason}"
            raise APIError(msg) from None
        except TimeoutError:
            msg = f"no answer from {self.base} within {self.timeout:g}s"
            raise APIError(msg) from None

    def lines(self, path: str, timeout: float):
        """The lines of a streamed answer (an event stream), as they come."""
        request = urllib.request.Request(self.base + path)
        for header, value in self.auth_headers().items():
            request.add_header(header, value)
        request.add_header("Accept", "text/event-stream")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                for line in response:
                    yield line.decode(errors="replace").rstrip("\r\n")
        except urllib.error.HTTPError as error:
            raise APIError(explain(error.code, self.base, path), error.code) from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            msg = f"lost {self.base}{path}: {getattr(error, 'reason', error)}"
            raise APIError(msg) from None

    def get(self, path: str, what: str):
        status, body = self.call("GET", path)
        if status != 200:
            location = body.get("location") if isinstance(body, dict) else None
            raise APIError(explain(status, self.base, what, body, location), status)
        return body


def _json(data: bytes):
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


# What JupyterHub answers for a user's server that is not running: a redirect
# to /hub/user/NAME/..., which then answers 424 (503 while it is starting).
REDIRECTS = (301, 302, 303, 307, 308)


def server_not_running(status: int, location: str | None) -> bool:
    return status in (424, 503) or (status in REDIRECTS and "/hub/" in (location or ""))


def explain(status: int, base: str, what: str, body=None, location: str | None = None) -> str:
    """One line for a failed call, naming the fix."""
    if status in (401, 403):
        return f"the server refused the token ({status}) for {base}; get a new token and try again"
    if server_not_running(status, location):
        return (
            f"the Jupyter server at {base} is not running ({status}); start it from the Hub, "
            "or connect with `jupyter-sshd-proxy proxy --start`"
        )
    if status in REDIRECTS:
        return (
            f"no {what} at {base}: it redirected to {location} ({status}); install "
            "jupyter-sshd-proxy in the Jupyter server's environment and restart the server, "
            "or check the URL"
        )
    if status == 404:
        return (
            f"{base} has no {what} (404): install jupyter-sshd-proxy in the Jupyter "
            "server's environment and restart the server"
        )
    message = body.get("message") if isinstance(body, dict) else None
    return f"{base} answered {status} for {what}" + (f": {message}" if message else "")
