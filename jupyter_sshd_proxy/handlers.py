"""REST endpoints of the server extension, under <base_url>sshd-proxy/api/.

    GET    status                          is sshd running; pid, port, version, sessions
    GET    host-keys                       the host public keys, to pin them
    GET    authorized-keys                 the keys that may log in
    POST   authorized-keys                 {"key": "ssh-ed25519 AAAA... me@laptop"}
    DELETE authorized-keys?fingerprint=SHA256:...

They are authorized like any Jupyter API call (token, cookie with XSRF and
origin checks, JupyterHub scopes). The resource is "terminals": whoever may
not open a terminal may not get a shell through ssh either.
"""

from __future__ import annotations

import json
import os

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from . import keys, sshd
from .errors import SSHDProxyError
from .server import STATE, authorized_keys_files, host_key_files, load_config

AUTH_RESOURCE = "terminals"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SSHDProxyAPIHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def fail(self, code: int, message: str) -> None:
        self.set_status(code)
        self.finish({"message": message})


class StatusHandler(SSHDProxyAPIHandler):
    @web.authenticated
    @authorized
    def get(self):
        process = STATE.process_status()
        pid = process.get("sshd_pid")
        running = _alive(pid)
        self.finish(
            {
                "running": running,
                "user": sshd.current_user().pw_name,
                "pid": pid if running else None,
                "port": STATE.port,
                "version": STATE.version,
                "restarts": process.get("restarts", 0),
                "sessions": len(STATE.connections())
                if running and os.path.isdir("/proc/self")
                else None,
                "last_error": STATE.last_error,
            }
        )


class HostKeysHandler(SSHDProxyAPIHandler):
    @web.authenticated
    @authorized
    def get(self):
        try:
            paths = host_key_files(load_config())
        except SSHDProxyError as error:
            self.log.error("jupyter-sshd-proxy: %s", error)
            return self.fail(503, str(error))
        found = []
        for path in paths:
            with open(path + ".pub") as stream:
                found.append(keys.parse_key(stream.read().strip()).as_json())
        return self.finish({"keys": found})


class AuthorizedKeysHandler(SSHDProxyAPIHandler):
    """The first of c.SSHDProxy.authorized_keys_files. The methods do not await
    between reading and writing the file, so requests cannot interleave."""

    def _path(self) -> str:
        config = load_config()
        return authorized_keys_files(config, sshd.current_user())[0]

    @web.authenticated
    @authorized
    def get(self):
        path = self._path()
        self.finish({"file": path, "keys": [key.as_json() for key in keys.read_keys(path)]})

    @web.authenticated
    @authorized
    def post(self):
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            return self.fail(400, 'the body is not JSON; send {"key": "ssh-ed25519 AAAA..."}')
        line = body.get("key") if isinstance(body, dict) else None
        if not isinstance(line, str):
            return self.fail(400, 'give the public key line as "key" in a JSON object')
        try:
            key = keys.parse_key(line, allow_options=body.get("allow_options") is True)
        except SSHDProxyError as error:
            return self.fail(400, str(error))
        path = self._path()
        if not keys.add_key(path, key):
            return self.fail(409, f"the key {key.fingerprint} is already authorized")
        self.log.info("jupyter-sshd-proxy: authorized key %s (%s)", key.fingerprint, key.comment)
        self.set_status(201)
        return self.finish(key.as_json())

    @web.authenticated
    @authorized
    def delete(self):
        fingerprint = self.get_argument("fingerprint", "")
        if not keys.is_fingerprint(fingerprint):
            return self.fail(400, "give ?fingerprint=SHA256:... (as ssh-keygen -l prints it)")
        if not keys.remove_key(self._path(), fingerprint):
            return self.fail(404, f"no authorized key has the fingerprint {fingerprint}")
        self.log.info("jupyter-sshd-proxy: removed authorized key %s", fingerprint)
        self.set_status(204)
        return self.finish()
