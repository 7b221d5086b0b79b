"""The Jupyter server extension: REST endpoints under <base_url>sshd-proxy/api/."""

from __future__ import annotations

from jupyter_server.utils import url_path_join

from .activity import start_tracking
from .errors import SSHDProxyError
from .handlers import AuthorizedKeysHandler, HostKeysHandler, StatusHandler
from .page import page_handlers
from .server import STATE, load_config


def _load_jupyter_server_extension(serverapp) -> None:
    base_url = serverapp.web_app.settings["base_url"]
    api = url_path_join(base_url, "sshd-proxy", "api")
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(api, "status"), StatusHandler),
            (url_path_join(api, "host-keys"), HostKeysHandler),
            (url_path_join(api, "authorized-keys"), AuthorizedKeysHandler),
            *page_handlers(base_url),
        ],
    )
    serverapp.log.debug("jupyter-sshd-proxy: REST endpoints at %s", api)
    try:
        config = load_config()
        start_tracking(serverapp, config, STATE.connections)
    except SSHDProxyError as error:
        serverapp.log.error("jupyter-sshd-proxy: %s; SSH use is not reported as activity", error)
