"""The Jupyter server extension: REST endpoints under <base_url>sshd-proxy/api/,
the /sshd/ route authorized like a terminal (route.py), the metrics on
<base_url>metrics (metrics.py) and the audit events (audit.py). Without it,
no sshd starts: the route would not be guarded.

It loads after jupyter_server_proxy's extension (extensions load in name
order), so the route it guards is already registered."""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import url_path_join

from . import metrics, route
from .activity import start_tracking
from .audit import Audit
from .handlers import AuthorizedKeysHandler, HostKeysHandler, StatusHandler
from .page import page_handlers
from .server import SSHDService
from .upgrade import log_upgrade_notice


def _load_jupyter_server_extension(serverapp: Any) -> None:
    service = SSHDService.of(serverapp)
    if service.settings_error is None:
        log_upgrade_notice(service.settings.legacy_host_key, serverapp.log)
    base_url = serverapp.web_app.settings["base_url"]
    api = url_path_join(base_url, "sshd-proxy", "api")
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(api, "status"), StatusHandler, {"service": service}),
            (url_path_join(api, "host-keys"), HostKeysHandler, {"service": service}),
            (url_path_join(api, "authorized-keys"), AuthorizedKeysHandler, {"service": service}),
            *page_handlers(base_url),
        ],
    )
    serverapp.log.debug("jupyter-sshd-proxy: REST endpoints at %s", api)
    # The route is guarded only if this succeeds; otherwise sshd never starts
    # (server.py asks), and status says why.
    service.unguarded = route.install(serverapp.web_app, base_url, serverapp.log)
    try:
        service.ledger.audit = Audit.register(serverapp, service.authorized_keys_files)
        metrics.register(service.ledger)
    except Exception as error:  # SSH works without them; the log says so
        serverapp.log.error("jupyter-sshd-proxy: no metrics or audit events: %s", error)
    off = service.off_reason()
    if off:
        serverapp.log.info("jupyter-sshd-proxy: %s", off)
    elif service.settings_error is None:
        start_tracking(serverapp, service.settings, service.connections)
    else:
        serverapp.log.error("jupyter-sshd-proxy: SSH use is not reported as activity")
