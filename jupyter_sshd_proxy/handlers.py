"""REST endpoints of the server extension, under <base_url>sshd-proxy/api/.

    GET    status                          is sshd running; pid, port, version, sessions
    GET    host-keys                       the host public keys, to pin them
    GET    authorized-keys                 the keys that may log in, from every keys file
    POST   authorized-keys                 {"key": "ssh-ed25519 AAAA... me@laptop"}: into the first
    DELETE authorized-keys?fingerprint=SHA256:...   from every keys file

They are authorized like any Jupyter API call (token, cookie with XSRF and
origin checks, JupyterHub scopes), as the "terminals" resource. Reading is
"read"; adding or removing a key is "execute", what opening a terminal needs:
a key is a shell, so whoever may not open a terminal may not give themselves
one through ssh either (the /sshd/ WebSocket asks the same, see route.py).

Refusals are web.HTTPError(code, reason): jupyter_server answers them as
{"message": reason}. Bad input is a 4xx with the reason, never a 500: the body
of a POST is read only up to MAX_BODY bytes (413 beyond, before the rest is
read), must be UTF-8 JSON, and text from the request that reaches the log has
its control characters escaped, so it cannot forge log lines. A problem of the
server's own setup (an invalid setting, a corrupt host key, an unwritable
file) is 503 with its one line.

Nothing here waits on the event loop: the keys files are read and edited in
a thread (asyncio.to_thread), and an edit waits at most KEY_EDIT_WAIT seconds
for another edit's lock (503 with the reason after that). Every kernel,
terminal and API call of the server goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Callable, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.http1connection import HTTP1Connection

from .errors import BadKeyError, SSHDProxyError
from .keys import edits, grammar
from .ledger import hub_user
from .server import SSHDService

AUTH_RESOURCE = "terminals"
CHANGE_KEYS = "execute"  # a key is a shell: what jupyter_server_terminals asks to open one
NOT_ALLOWED = (
    "adding or removing a key needs the right to open a terminal (execute on terminals), "
    "which this user does not have"
)
MAX_BODY = 64 * 1024  # bytes; a key line is at most grammar.MAX_LINE characters
KEY_EDIT_WAIT = 5.0  # seconds an edit waits for another edit of the same keys file
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

    async def in_thread(self, function: Callable[..., Result], *args: Any) -> Result:
        """server_side(function, *args), in a thread: file work (a lock that
        another edit holds, a slow disk) never holds up the event loop."""
        return await asyncio.to_thread(self.server_side, function, *args)

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
        # What sshd presents: derived from the private keys, not read from .pub files.
        presented = self.server_side(self.service.host_keys)
        self.finish({"keys": [key.public.as_json() for key in presented]})


@web.stream_request_body
class AuthorizedKeysHandler(SSHDProxyAPIHandler):
    """Every file of c.SSHDProxy.authorized_keys_files, as sshd reads them: GET
    lists the keys of each, with the file each line is in; DELETE removes the
    key from each file it is in; POST adds a key to the first file, unless a
    file already lets it in.

    Each edit holds the file's lock (keys/edits.py) from reading to writing, so edits
    by other servers sharing the home directory are never lost; it runs in a
    thread, and waits for the lock for at most KEY_EDIT_WAIT seconds. The body is
    streamed (stream_request_body) so that prepare() sees the headers before
    any of it is read, and can refuse a body that is too large."""

    async def prepare(self) -> None:  # type: ignore[override]  # as APIHandler.prepare does
        self._body = bytearray()
        await super().prepare()
        if self._finished:
            return
        length = self.request.headers.get("Content-Length")
        if length is None:
            # A chunked body: data_received answers 413 as soon as it passes
            # MAX_BODY, and the connection is closed. A single chunk that
            # would take it past twice that is refused by tornado itself
            # (400) before it is read.
            connection = self.request.connection
            assert isinstance(connection, HTTP1Connection)  # tornado serves HTTP/1 only
            connection.set_max_body_size(2 * MAX_BODY)
        elif not re.fullmatch("[0-9]+", length):
            # Checked here: tornado reads the header only after prepare().
            raise web.HTTPError(
                400, "the Content-Length header is not a number of bytes; send one length"
            )
        elif int(length) > MAX_BODY:
            # Answered before the body is read; tornado then closes the
            # connection instead of reading the rest.
            raise web.HTTPError(413, _too_large())

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._body += chunk
        if len(self._body) > MAX_BODY:
            error = web.HTTPError(413, _too_large())
            self.send_error(413, exc_info=(type(error), error, None))

    def json_object(self) -> dict[str, Any]:
        """The request body, which must be a JSON object in UTF-8."""
        try:
            text = bytes(self._body).decode("utf-8")
        except UnicodeDecodeError:
            raise web.HTTPError(400, "the request body is not UTF-8 text; " + EXAMPLE) from None
        try:
            value = json.loads(text)
        except RecursionError:
            raise web.HTTPError(
                400, "the JSON in the body is nested too deeply; " + EXAMPLE
            ) from None
        except ValueError:
            raise web.HTTPError(400, "the request body is not JSON; " + EXAMPLE) from None
        if not isinstance(value, dict):
            raise web.HTTPError(400, 'give the public key line as "key" in a JSON object')
        return value

    def keys_files(self) -> list[str]:
        return self.server_side(self.service.authorized_keys_files)

    @web.authenticated
    @authorized
    async def get(self) -> None:
        paths = self.keys_files()
        found = []
        for path in paths:
            for key in await self.in_thread(edits.read_keys, path):
                found.append({**key.as_json(), "file": path})
        # "file" (the first file, which POST edits) is kept for older clients.
        self.finish({"file": paths[0], "files": paths, "keys": found})

    @web.authenticated
    @authorized(CHANGE_KEYS, message=NOT_ALLOWED)  # type: ignore[untyped-decorator]  # authorized(action) is mistyped upstream
    async def post(self) -> None:
        body = self.json_object()
        line = body.get("key")
        if not isinstance(line, str):
            raise web.HTTPError(400, 'give the public key line as "key" in a JSON object')
        try:
            key = grammar.parse_key(line, allow_options=body.get("allow_options") is True)
        except BadKeyError as error:
            raise web.HTTPError(400, str(error)) from None
        paths = self.keys_files()
        for path in paths[1:]:
            for found in await self.in_thread(edits.read_keys, path):
                if (found.fingerprint, found.cert_authority) == (
                    key.fingerprint,
                    key.cert_authority,
                ):
                    raise web.HTTPError(
                        409, f"the key {key.fingerprint} is already authorized, in {path}"
                    )
        if not await self.in_thread(edits.add_key, paths[0], key, KEY_EDIT_WAIT):
            raise web.HTTPError(409, f"the key {key.fingerprint} is already authorized")
        self.log.info(
            "jupyter-sshd-proxy: authorized key %s (%s)",
            key.fingerprint,
            grammar.escaped(key.comment),
        )
        if self.service.ledger.audit is not None:
            self.service.ledger.audit.key_added(hub_user(self), key, paths[0])
        self.set_status(201)
        self.finish(key.as_json())

    @web.authenticated
    @authorized(CHANGE_KEYS, message=NOT_ALLOWED)  # type: ignore[untyped-decorator]  # authorized(action) is mistyped upstream
    async def delete(self) -> None:
        fingerprint = self.get_argument("fingerprint", "")
        if not grammar.is_fingerprint(fingerprint):
            raise web.HTTPError(400, "give ?fingerprint=SHA256:... (as ssh-keygen -l prints it)")
        removed, changed, found = 0, [], None
        for path in self.keys_files():  # each edit holds its own file's lock
            if found is None:  # what the key was, for the audit event
                lines = await self.in_thread(edits.read_keys, path)
                found = next((k for k in lines if k.fingerprint == fingerprint), None)
            count = await self.in_thread(edits.remove_key, path, fingerprint, KEY_EDIT_WAIT)
            if count:
                removed += count
                changed.append(path)
        if not removed:
            raise web.HTTPError(404, f"no authorized key has the fingerprint {fingerprint}")
        if self.service.ledger.audit is not None:
            self.service.ledger.audit.key_removed(hub_user(self), fingerprint, found, changed)
        self.log.info(
            "jupyter-sshd-proxy: removed authorized key %s (%d lines)", fingerprint, removed
        )
        self.set_status(204)
        self.finish()


EXAMPLE = 'send {"key": "ssh-ed25519 AAAA... me@laptop"}'


def _too_large() -> str:
    return f"the request body is larger than {MAX_BODY} bytes; send one public key line"
