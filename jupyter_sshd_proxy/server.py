"""The jupyter-server-proxy entry point: the /sshd/ route and the sshd behind it.

jupyter-server-proxy calls setup_sshd() when the Jupyter server starts, and the
command callable when the first WebSocket arrives on /sshd/. The callable runs
the preflight checks in the Jupyter server process, so a problem is one line
in the server's log and the WebSocket is closed at once (no hang), and the
next connection tries again: fix the problem, reconnect, no restart needed.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

from tornado import web

from . import sshd
from .errors import SSHDProxyError
from .settings import SSHDProxy, env_name
from .supervisor import descendants


@dataclass
class SSHDState:
    """What this Jupyter server knows about its sshd, for the status endpoint."""

    port: int | None = None
    state_dir: str | None = None
    version: str | None = None
    last_error: str | None = None

    def process_status(self) -> dict:
        """The supervisor's status file: sshd's pid and how often it restarted."""
        if not self.state_dir:
            return {}
        try:
            with open(os.path.join(self.state_dir, "status.json")) as stream:
                return json.load(stream)
        except (OSError, ValueError):
            return {}

    def connections(self) -> list[int]:
        """sshd's per-connection processes: the listener's sshd children, and those
        the supervisor adopted when a listener died. (The supervisor also adopts
        orphaned session commands; those are not connections.)"""
        process = self.process_status()
        supervisor, listener = process.get("supervisor_pid"), process.get("sshd_pid")
        found = []
        for pid in descendants(supervisor) if supervisor else []:
            if pid == listener:
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as stream:
                    ppid = int(stream.read().rsplit(b")", 1)[1].split()[1])
                program = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            except (OSError, ValueError, IndexError):
                continue
            # sshd, or sshd-session (OpenSSH >= 9.8), for each connection.
            if ppid in (listener, supervisor) and program.startswith("sshd"):
                found.append(pid)
        return found


STATE = SSHDState()


def load_config() -> SSHDProxy:
    """SSHDProxy, configured from the running Jupyter server's config if there is one."""
    from jupyter_server.serverapp import ServerApp

    parent = ServerApp.instance() if ServerApp.initialized() else None
    return SSHDProxy(parent=parent)


def setup_sshd() -> dict:
    """The jupyter-server-proxy process spec of the /sshd/ route."""
    config = load_config()
    try:
        timeout = config.start_timeout
    except SSHDProxyError as error:
        config.log.error("jupyter-sshd-proxy: %s", error)
        timeout = 10.0
    return {
        "command": start_command,
        "timeout": timeout,
        "raw_socket_proxy": True,
        # Pings would count as activity: activity.py counts SSH use instead.
        "update_last_activity": False,
        # The route carries SSH, not a web page: the tile in JupyterLab's launcher
        # (and the item in Notebook 7's New menu) opens the page at
        # <base_url>sshd-proxy/ instead (path_info is relative to the base URL).
        "launcher_entry": {
            "enabled": True,
            "title": "SSH",
            "path_info": "sshd-proxy/",
            "icon_path": os.path.join(os.path.dirname(__file__), "static", "ssh.svg"),
            "category": "Other",
        },
    }


def start_command(port: int) -> list[str]:
    """Check everything, write sshd_config, and return the supervisor's argv."""
    config = load_config()
    try:
        argv = prepare_sshd(config, port)
    except SSHDProxyError as error:
        STATE.last_error = str(error)
        config.log.error("jupyter-sshd-proxy: %s", error)
        # No log message: the line above is the whole story, no traceback.
        raise web.HTTPError(503) from None
    STATE.last_error = None
    # jupyter-server-proxy fills in {port}-style templates: keep braces literal.
    return [part.replace("{", "{{").replace("}", "}}") for part in argv]


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


def authorized_keys_files(config: SSHDProxy, user) -> list[str]:
    return [sshd.expand_user_path(path, user) for path in config.authorized_keys_files]


def host_key_files(config: SSHDProxy, ssh_keygen: str | None = None, user=None) -> list[str]:
    """The host private keys, made now if this is their first use."""
    user = user or sshd.current_user()
    ssh_keygen = ssh_keygen or find_programs(config)[1]
    return sshd.ensure_host_keys(ssh_keygen, sshd.expand_user_path(config.host_key_dir, user), user)


def prepare_sshd(config: SSHDProxy, port: int) -> list[str]:
    user = sshd.current_user()
    sshd_path, ssh_keygen = find_programs(config)
    version = sshd.sshd_version(sshd_path)
    keys_files = authorized_keys_files(config, user)
    sshd.check_strict_modes(keys_files, user)
    for path in keys_files:
        if not os.path.exists(path):
            config.log.warning(
                "jupyter-sshd-proxy: %s does not exist yet; add a public key to it to log in", path
            )
    problem = sshd.terminal_problem(user)
    if problem:
        config.log.warning("jupyter-sshd-proxy: %s", problem)
    host_keys = host_key_files(config, ssh_keygen, user)
    environment = sshd.session_environment(os.environ) if config.pass_environment else None
    if environment and not version.at_least(8, 7):
        config.log.warning(
            "jupyter-sshd-proxy: %s cannot pass the server's environment to ssh sessions "
            "(SetEnv needs OpenSSH 8.7 or newer)",
            version.text,
        )
    text = sshd.render_sshd_config(
        port=port,
        host_keys=host_keys,
        authorized_keys_files=keys_files,
        user=user,
        log_level=config.log_level,
        version=version,
        extra_options=config.extra_options,
        environment=environment,
    )
    state_dir = _new_state_dir(port)
    config_path = os.path.join(state_dir, "sshd_config")
    sshd.write_private_file(config_path, text)
    try:
        sshd.check_sshd_config(sshd_path, config_path)
    except SSHDProxyError:
        shutil.rmtree(state_dir, ignore_errors=True)
        raise
    STATE.port, STATE.state_dir, STATE.version = port, state_dir, version.text
    config.log.info(
        "jupyter-sshd-proxy: starting %s (%s) on 127.0.0.1:%s", sshd_path, version.text, port
    )
    return [
        sys.executable,
        "-m",
        "jupyter_sshd_proxy.supervisor",
        "--state-dir",
        state_dir,
        "--",
        *sshd.sshd_argv(sshd_path, config_path),
    ]


def _new_state_dir(port: int) -> str:
    """A private directory for this sshd's config and status, gone when the server exits."""
    from jupyter_core.paths import jupyter_runtime_dir

    runtime_dir = jupyter_runtime_dir()
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    state_dir = tempfile.mkdtemp(prefix=f"sshd-proxy-{port}-", dir=runtime_dir)
    atexit.register(shutil.rmtree, state_dir, True)
    return state_dir
