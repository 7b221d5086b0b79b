"""The Jupyter server extension: REST endpoints under <base_url>sshd-proxy/api/."""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import url_path_join

from . import route
from .activity import start_tracking
from .handlers import AuthorizedKeysHandler, HostKeysHandler, StatusHandler
from .server import SSHDService


def _load_jupyter_server_extension(serverapp: Any) -> None:
    service = SSHDService.of(serverapp)
    base_url = serverapp.web_app.settings["base_url"]
    api = url_path_join(base_url, "sshd-proxy", "api")
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(api, "status"), StatusHandler, {"service": service}),
            (url_path_join(api, "host-keys"), HostKeysHandler, {"service": service}),
            (url_path_join(api, "authorized-keys"), AuthorizedKeysHandler, {"service": service}),
        ],
    )
    serverapp.log.debug("jupyter-sshd-proxy: REST endpoints at %s", api)
    if not route.install(serverapp.web_app, base_url):
        serverapp.log.warning(
            "jupyter-sshd-proxy: jupyter-server-proxy's sshd/ route not found, so its "
            "memory is not bounded; is jupyter-server-proxy enabled?"
        )
    if service.settings_error is None:
        start_tracking(serverapp, service.settings, service.connections)
    else:
        serverapp.log.error("jupyter-sshd-proxy: SSH use is not reported as activity")
