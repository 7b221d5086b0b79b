"""REST endpoints of the server extension.

They are authorized like any Jupyter API call (token, cookie with XSRF and
origin checks, JupyterHub scopes). The resource is "terminals": whoever may
not open a terminal may not get a shell through ssh either.
"""

from __future__ import annotations

import os

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .server import STATE

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


class StatusHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self):
        process = STATE.process_status()
        pid = process.get("sshd_pid")
        running = _alive(pid)
        self.finish(
            {
                "running": running,
                "pid": pid if running else None,
                "port": STATE.port,
                "version": STATE.version,
                "restarts": process.get("restarts", 0),
                "last_error": STATE.last_error,
            }
        )
