"""REST endpoints of the server extension, under <base_url>sshd-proxy/api/.

    GET    status                          is sshd running; pid, port, version, sessions
    GET    host-keys                       the host public keys, to pin them
    GET    authorized-keys                 the keys that may log in
    POST   authorized-keys                 {"key": "ssh-ed25519 AAAA... me@laptop"}
    DELETE authorized-keys?fingerprint=SHA256:...

They are authorized like any Jupyter API call (token, cookie with XSRF and
origin checks, JupyterHub scopes). The resource is "terminals": whoever may
not open a terminal may not get a shell through ssh either.

Refusals are web.HTTPError(code, reason): jupyter_server answers them as
{"message": reason}. A problem of the server's own setup (an invalid setting,
an unreadable host key) is 503 with its one line, never a 500.
"""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from . import keys
from .errors import BadKeyError, SSHDProxyError
from .server import SSHDService

AUTH_RESOURCE = "terminals"
Result = TypeVar("Result")


class SSHDProxyAPIHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, service: SSHDService) -> None:
        self.service = service

    def server_side(self, function: Callable[..., Result], *args: Any) -> Result:
        """function(*args); a problem of the server's setup becomes 503 with its line."""
        try:
            return function(*args)
        except BadKeyError:
            raise
        except SSHDProxyError as error:
            self.log.error("jupyter-sshd-proxy: %s", error)
            raise web.HTTPError(503, str(error)) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # tornado stores a reason given without arguments with each '%' doubled;
        # APIHandler would send that form. Send the reason as it was written.
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, web.HTTPError) and error.log_message:
            self.set_header("Content-Type", "application/json")
            message = error.log_message % error.args
            self.finish(json.dumps({"message": message, "reason": error.reason}))
            return
        super().write_error(status_code, **kwargs)


class StatusHandler(SSHDProxyAPIHandler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        self.finish(self.service.status())


class HostKeysHandler(SSHDProxyAPIHandler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        found = []
        for path in self.server_side(self.service.host_key_files):
            with open(path + ".pub") as stream:
                found.append(keys.parse_key(stream.read().strip()).as_json())
        self.finish({"keys": found})


class AuthorizedKeysHandler(SSHDProxyAPIHandler):
    """The first of c.SSHDProxy.authorized_keys_files. The methods do not await
    between reading and writing the file, so requests cannot interleave."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        path = self.server_side(self.service.authorized_keys_path)
        self.finish({"file": path, "keys": [key.as_json() for key in keys.read_keys(path)]})

    @web.authenticated
    @authorized
    def post(self) -> None:
        body = self.get_json_body()
        line = body.get("key") if isinstance(body, dict) else None
        if not isinstance(line, str):
            raise web.HTTPError(400, 'give the public key line as "key" in a JSON object')
        try:
            key = keys.parse_key(line, allow_options=body.get("allow_options") is True)
        except BadKeyError as error:
            raise web.HTTPError(400, str(error)) from None
        path = self.server_side(self.service.authorized_keys_path)
        if not keys.add_key(path, key):
            raise web.HTTPError(409, f"the key {key.fingerprint} is already authorized")
        self.log.info("jupyter-sshd-proxy: authorized key %s (%s)", key.fingerprint, key.comment)
        self.set_status(201)
        self.finish(key.as_json())

    @web.authenticated
    @authorized
    def delete(self) -> None:
        fingerprint = self.get_argument("fingerprint", "")
        if not keys.is_fingerprint(fingerprint):
            raise web.HTTPError(400, "give ?fingerprint=SHA256:... (as ssh-keygen -l prints it)")
        path = self.server_side(self.service.authorized_keys_path)
        if not keys.remove_key(path, fingerprint):
            raise web.HTTPError(404, f"no authorized key has the fingerprint {fingerprint}")
        self.log.info("jupyter-sshd-proxy: removed authorized key %s", fingerprint)
        self.set_status(204)
        self.finish()
