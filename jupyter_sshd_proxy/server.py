"""The jupyter-server-proxy entry point: the /sshd/ route and the sshd behind it.

jupyter-server-proxy calls setup_sshd() when the Jupyter server starts, and the
command callable when the first WebSocket arrives on /sshd/. The callable runs
the preflight checks in the Jupyter server process, so a problem is one line
in the server's log and the WebSocket is closed at once (no hang), and the
next connection tries again: fix the problem, reconnect, no restart needed.

The callable starts nothing unless the route is known to be guarded: it must
be called from the request of our route handler (route.SSHDRouteHandler,
which the server extension put in the place of jupyter-server-proxy's) after
that request passed the terminal check. With the extension disabled or
broken, or a jupyter-server-proxy it cannot guard, no sshd ever starts.

The route reaches the supervisor through a unix socket in a private
directory that jupyter-server-proxy makes (`unix_socket: True`: mkdtemp,
mode 0700): no other account on the host can connect to it.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import os
import pwd
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from tornado import web

from jupyter_sshd_proxy_client.errors import ConfigError, PreflightError, SSHDProxyError

from . import procfs, relay, sshd
from .host_keys import HostKey, legacy_host_key, our_host_keys, presented
from .ledger import Ledger, serve_reports
from .settings import SSHDProxy, env_name

if TYPE_CHECKING:
    import asyncio

    from . import user_ca

SERVICE_KEY = "jupyter_sshd_proxy"  # where the service lives in the Tornado settings
NOT_GUARDED = (
    "the /sshd/ route is not guarded, so sshd is not started: the server extension "
    "jupyter_sshd_proxy is not loaded (disabled, or it failed: see the lines above); "
    "enable it with: jupyter server extension enable jupyter_sshd_proxy, or turn SSH off "
    f"with c.SSHDProxy.policy = 'off' ({env_name('policy')}=off)"
)


class SSHDService:
    """One per Jupyter server: its SSHDProxy settings, and what it knows of its sshd.

    The server extension makes it when it loads and hands it to the REST
    handlers; jupyter-server-proxy's entry point (setup_sshd) finds the same
    object in the Tornado application's settings. Invalid settings do not stop
    the Jupyter server: they are logged once, reported as last_error, and
    every request that needs them is answered 503 with the same line.
    """

    def __init__(self, settings: SSHDProxy | None, log: logging.Logger, error: str | None = None):
        self._settings = settings
        self.log = log
        self.settings_error = error
        self.socket_path: str | None = None
        self.state_dir: str | None = None
        self.version: str | None = None
        self.last_error: str | None = error
        # Why the server extension could not guard the /sshd/ route, if it
        # could not: then sshd is never started (fail closed).
        self.unguarded: str | None = None
        # What this server knows of its connections (metrics, audit events).
        self.ledger = Ledger(log)
        if settings is not None and settings.log_level in ("QUIET", "FATAL", "ERROR"):
            self.ledger.logins_logged = False
        self.reports_path: str | None = None
        # Whether sshd trusts the Hub's certificate authority (user_ca.Trust),
        # as last prepared; None when it is not configured or not prepared yet.
        self.certificates: user_ca.Trust | None = None
        self._reports_server: asyncio.Task[asyncio.Server] | None = None

    @classmethod
    def of(cls, serverapp: Any) -> SSHDService:
        """The service of this Jupyter server, made on first use."""
        settings = serverapp.web_app.settings
        if SERVICE_KEY not in settings:
            try:
                service = cls(SSHDProxy(parent=serverapp), serverapp.log)
            except ConfigError as error:
                serverapp.log.error("jupyter-sshd-proxy: %s", error)
                service = cls(None, serverapp.log, str(error))
            settings[SERVICE_KEY] = service
        made: SSHDService = settings[SERVICE_KEY]
        return made

    @property
    def settings(self) -> SSHDProxy:
        """The settings; a ConfigError when they are invalid."""
        if self._settings is None:
            raise ConfigError(self.settings_error)
        return self._settings

    def off_reason(self) -> str | None:
        """Why SSH is off on this server (c.SSHDProxy.policy), or None."""
        if self._settings is None or self._settings.policy != "off":
            return None
        return (
            f"SSH is off on this server ({self._settings.source('policy')} is 'off'); "
            "ask its operator to turn it on"
        )

    def process_spec(self) -> dict[str, Any]:
        """The jupyter-server-proxy process spec of the /sshd/ route."""
        if self._settings is not None:
            timeout = self._settings.start_timeout
        else:  # invalid settings fail every start with their message
            timeout = SSHDProxy.start_timeout.default_value

        def command(unix_socket: str) -> list[str]:
            # jupyter-server-proxy passes arguments by the names it finds in the
            # callable's signature, which for a bound method includes self:
            # give it a plain function of the socket's path.
            return self.start_command(unix_socket)

        return {
            "command": command,
            "timeout": timeout,
            "raw_socket_proxy": True,
            # A socket in a new directory of mode 0700 (jupyter-server-proxy
            # makes it with mkdtemp): only this user can connect to it.
            "unix_socket": True,
            # Pings would count as activity: activity.py counts SSH use instead.
            "update_last_activity": False,
            # The route carries SSH, not a web page: the tile in JupyterLab's launcher
            # (and the item in Notebook 7's New menu) opens the page at
            # <base_url>sshd-proxy/ instead (path_info is relative to the base URL).
            "launcher_entry": {
                "enabled": self.off_reason() is None,
                "title": "SSH",
                "path_info": "sshd-proxy/",
                "icon_path": os.path.join(os.path.dirname(__file__), "static", "ssh.svg"),
                "category": "Other",
            },
        }

    def refusal(self, route: Any) -> str | None:
        """Why sshd may not be started for this request, or None.

        route is the handler whose request asks (upstream.starting_route()):
        only our guarded route handler, after its request passed the terminal
        check, may start sshd."""
        from .route import SSHDRouteHandler

        off = self.off_reason()
        if off:
            return off
        if self.unguarded:
            return self.unguarded
        if not (isinstance(route, SSHDRouteHandler) and route.terminal_allowed):
            return NOT_GUARDED
        return None

    def start_command(self, socket_path: str) -> list[str]:
        """Check everything, write sshd_config, and return the supervisor's argv.

        Any failure, not only this package's own errors (a full disk, a bug),
        is one line in the log and last_error, so the client can say it."""
        from . import upstream

        problem = self.refusal(upstream.starting_route())
        if problem is None:
            try:
                argv = prepare_sshd(self, socket_path)
            except SSHDProxyError as error:
                problem = str(error)
            except OSError as error:
                problem = f"sshd cannot be prepared: {_os_error(error)}"
            except Exception as error:
                problem = (
                    f"sshd cannot be prepared: {type(error).__name__}: {error}; this is a bug "
                    "in jupyter-sshd-proxy, please report it with the Jupyter server's log"
                )
                self.log.debug("jupyter-sshd-proxy: preparing sshd failed", exc_info=True)
            if problem is not None:
                self.ledger.preflight_failed()
        if problem is not None:
            self.last_error = problem
            self.log.error("jupyter-sshd-proxy: %s", problem)
            # No log message: the line above is the whole story, no traceback.
            raise web.HTTPError(503) from None
        self.last_error = None
        # jupyter-server-proxy fills in {port}-style templates: keep braces literal.
        return [part.replace("{", "{{").replace("}", "}}") for part in argv]

    def listen_for_reports(self, socket_path: str) -> str:
        """The unix socket the supervisor reports to (reports.py), listened on
        now: next to sshd's own, in jupyter-server-proxy's private directory."""
        path = os.path.join(os.path.dirname(socket_path), "reports")
        if self._reports_server is not None:
            self._reports_server.add_done_callback(_close_server)
        self._reports_server = serve_reports(path, self.ledger.report)
        self.reports_path = path
        if path not in _SOCKETS:
            _SOCKETS.add(path)
            atexit.register(_remove_socket, path)
        return path

    def process_status(self) -> dict[str, Any]:
        """The supervisor's status file: its pid, whether it serves, why not."""
        if not self.state_dir:
            return {}
        try:
            with open(os.path.join(self.state_dir, "status.json")) as stream:
                status: dict[str, Any] = json.load(stream)  # as the supervisor wrote it
                return status
        except (OSError, ValueError):
            return {}

    def connections(self) -> list[int]:
        """One process per open SSH connection: the sshd -i that the supervisor
        started for it. (The supervisor also adopts session commands whose sshd
        ended; those are not connections.)"""
        return self._connections_of(self.process_status().get("supervisor_pid"))

    @staticmethod
    def _connections_of(supervisor: int | None) -> list[int]:
        if not supervisor or not procfs.available():
            return []
        return [
            pid
            for pid in procfs.children(supervisor)
            # sshd, or sshd-session (OpenSSH >= 9.8) once sshd -i has started it.
            if (procfs.program(pid) or "").startswith("sshd") and procfs.alive(pid)
        ]

    def status(self) -> dict[str, Any]:
        """What the status endpoint answers. pid is the supervisor's, the process
        that holds the socket and starts an sshd for each connection."""
        process = self.process_status()
        pid = process.get("supervisor_pid")
        alive = procfs.alive(pid) if pid else False
        running = alive and bool(process.get("serving"))
        off = self.off_reason()
        return {
            "running": running,
            "policy": self._settings.policy if self._settings is not None else None,
            "off": off,
            "user": sshd.current_user().pw_name,
            "pid": pid if alive else None,
            "socket": self.socket_path,
            "version": self.version,
            "restarts": process.get("restarts", 0),
            "sessions": len(self._connections_of(pid)) if alive and procfs.available() else None,
            "certificates": self.certificates.as_json() if self.certificates else None,
            "last_error": (process.get("last_error") if alive else None)
            or (None if off else self.unguarded)
            or self.last_error,
        }

    def host_keys(self) -> list[HostKey]:
        """The host keys sshd presents, made now if this is their first use."""
        return host_keys(self.settings, self.log)

    def authorized_keys_files(self) -> list[str]:
        """The configured authorized keys files, expanded, each once, in order."""
        paths = authorized_keys_files(self.settings, sshd.current_user())
        return list(dict.fromkeys(paths))


def _close_server(task: asyncio.Task[asyncio.Server]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


def setup_sshd() -> dict[str, Any]:
    """The jupyter-server-proxy entry point: the process spec of the /sshd/ route."""
    from jupyter_server.serverapp import ServerApp

    return SSHDService.of(ServerApp.instance()).process_spec()


def find_programs(config: SSHDProxy) -> tuple[str, str]:
    """The paths of sshd and ssh-keygen."""
    sshd_path = sshd.find_program(
        "sshd", config.sshd_path, f"c.SSHDProxy.sshd_path / {env_name('sshd_path')}"
    )
    ssh_keygen = sshd.find_program(
        "ssh-keygen",
        config.ssh_keygen_path,
        f"c.SSHDProxy.ssh_keygen_path / {env_name('ssh_keygen_path')}",
        near=sshd_path,
    )
    return sshd_path, ssh_keygen


def authorized_keys_files(config: SSHDProxy, user: pwd.struct_passwd) -> list[str]:
    return [sshd.expand_user_path(path, user) for path in config.authorized_keys_files]


def host_key_dir(config: SSHDProxy, user: pwd.struct_passwd) -> str:
    """The configured host key directory, or the default under the Jupyter data dir."""
    if config.host_key_dir:
        return sshd.expand_user_path(config.host_key_dir, user)
    from jupyter_core.paths import jupyter_data_dir

    return os.path.join(jupyter_data_dir(), "sshd_proxy", "host_keys")


def host_keys(
    config: SSHDProxy,
    log: logging.Logger,
    ssh_keygen: str | None = None,
    user: pwd.struct_passwd | None = None,
) -> list[HostKey]:
    """The host keys sshd presents, with their public halves; made now if this
    is their first use."""
    user = user or sshd.current_user()
    ssh_keygen = ssh_keygen or find_programs(config)[1]
    ours = sshd.ensure_host_keys(ssh_keygen, host_key_dir(config, user), user)
    legacy = legacy_host_key(ssh_keygen, config.legacy_host_key, log)
    return presented(our_host_keys(ssh_keygen, ours, log), legacy)


def prepare_sshd(service: SSHDService, socket_path: str) -> list[str]:
    """Everything before sshd can start; the supervisor's argv."""
    config = service.settings
    user = sshd.current_user()
    sshd_path, ssh_keygen = find_programs(config)
    version = sshd.sshd_version(sshd_path)
    keys_files = authorized_keys_files(config, user)
    sshd.check_strict_modes(keys_files, user)
    if not any(os.path.exists(path) for path in keys_files):
        files = list(dict.fromkeys(keys_files))
        missing = f"{files[0]} does not exist"
        if files[1:]:
            missing = f"none of {', '.join(files)} exists"
        service.log.warning(
            "jupyter-sshd-proxy: %s yet; add a public key to %s to log in", missing, files[0]
        )
    problem = sshd.terminal_problem(user)
    if problem:
        service.log.warning("jupyter-sshd-proxy: %s", problem)
    presented = host_keys(config, service.log, ssh_keygen, user)
    environment = sshd.session_environment(os.environ) if config.pass_environment else None
    if environment and not version.at_least(8, 7):
        service.log.warning(
            "jupyter-sshd-proxy: %s cannot pass the server's environment to ssh sessions "
            "(SetEnv needs OpenSSH 8.7 or newer)",
            version.text,
        )
    state_dir = _new_state_dir()
    config_path = os.path.join(state_dir, "sshd_config")
    try:
        certificate_options = _certificate_options(service, state_dir)
        text = sshd.render_sshd_config(
            host_keys=[key.path for key in presented],
            authorized_keys_files=keys_files,
            user=user,
            log_level=config.log_level,
            version=version,
            extra_options=config.extra_options,
            environment=environment,
            policy=config.policy,
            certificate_options=certificate_options,
        )
        try:
            sshd.write_private_file(config_path, text)
        except OSError as error:
            raise PreflightError(_cannot_write(os.path.dirname(state_dir), error)) from None
        effective = sshd.check_sshd_config(sshd_path, config_path)
    except BaseException:
        shutil.rmtree(state_dir, ignore_errors=True)
        raise
    try:
        reports_path = service.listen_for_reports(socket_path)
    except OSError as error:
        shutil.rmtree(state_dir, ignore_errors=True)
        msg = f"cannot listen next to {socket_path}: {_os_error(error)}"
        raise PreflightError(msg) from None
    service.socket_path, service.state_dir = socket_path, state_dir
    service.version = version.text
    if socket_path not in _SOCKETS:
        # jupyter-server-proxy makes the socket's directory and leaves it: it
        # goes when the server exits, as our state directory does.
        _SOCKETS.add(socket_path)
        atexit.register(_remove_socket, socket_path)
    service.log.info(
        "jupyter-sshd-proxy: starting %s (%s) on %s", sshd_path, version.text, socket_path
    )
    return [
        sys.executable,
        "-m",
        "jupyter_sshd_proxy.supervisor",
        f"--state-dir={state_dir}",
        f"--socket={socket_path}",
        f"--sshd={sshd_path}",
        f"--config={config_path}",
        f"--max-unauthenticated={config.max_unauthenticated}",
        f"--max-relays={config.max_relays}",
        f"--login-grace={effective.get('logingracetime', sshd.LOGIN_GRACE_SECONDS)}",
        f"--reports={reports_path}",
    ]


def _certificate_options(service: SSHDService, state_dir: str) -> list[str]:
    """sshd's options that trust the Hub's certificate authority for this
    server's Hub user (user_ca.py); none, and one log line, when that fails."""
    from . import user_ca

    source = service.settings.trusted_user_ca_keys
    if not source:
        service.certificates = None
        return []
    options, trust = user_ca.prepare(source, os.environ.get("JUPYTERHUB_USER"), state_dir)
    service.certificates = trust
    if trust.error:
        service.log.error("jupyter-sshd-proxy: %s", trust.error)
    else:
        service.log.info(
            "jupyter-sshd-proxy: sshd trusts certificates for %s signed by %s",
            trust.principal, ", ".join(trust.ca_fingerprints),
        )  # fmt: skip
    return options


_SOCKETS: set[str] = set()


def _remove_socket(path: str) -> None:
    """The socket, the relay socket beside it, and their directory if nothing else is in it."""
    targets = (
        (os.unlink, path),
        (os.unlink, relay.relay_socket_path(path)),
        (os.rmdir, os.path.dirname(path)),
    )
    for remove, target in targets:
        with contextlib.suppress(OSError):
            remove(target)


def _new_state_dir() -> str:
    """A private directory for this sshd's config and status, gone when the server exits."""
    from jupyter_core.paths import jupyter_runtime_dir

    runtime_dir = jupyter_runtime_dir()
    try:
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        state_dir = tempfile.mkdtemp(prefix="sshd-proxy-", dir=runtime_dir)
    except OSError as error:
        raise PreflightError(_cannot_write(runtime_dir, error)) from None
    atexit.register(shutil.rmtree, state_dir, True)
    return state_dir


def _cannot_write(path: str, error: OSError) -> str:
    """One line for sshd's files that cannot be written into the runtime directory."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space there"
    elif error.errno == errno.EROFS:
        fix = "make it writable"
    else:
        fix = "fix that"
    return (
        f"cannot write sshd's configuration into the Jupyter runtime directory {path}: "
        f"{error.strerror}; {fix}, or set JUPYTER_RUNTIME_DIR to a writable directory, "
        "then connect again"
    )


def _os_error(error: OSError) -> str:
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}; fix that, then connect again"
