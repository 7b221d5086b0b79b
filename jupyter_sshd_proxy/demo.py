"""`jupyter-sshd-proxy demo`: the whole path on one machine, nothing left behind.

A Jupyter server on 127.0.0.1 with a throwaway token, host keys pinned before
the first connection, a throwaway ed25519 key, and ssh through our own
ProxyCommand with StrictHostKeyChecking=yes. The token reaches the
ProxyCommand through its environment, never through argv.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import sshd
from .errors import PreflightError

HOST_ALIAS = "jupyter-demo"


def say(message: str) -> None:
    print(f"jupyter-sshd-proxy demo: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_ready(port: int, token: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/api/status", headers={"Authorization": f"token {token}"})
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def prepare_keys(
    workdir: Path, ssh_keygen: str, user: pwd.struct_passwd, alias: str
) -> tuple[Path, Path, Path]:
    """A throwaway client key, authorized; host keys made now and pinned for alias.

    Returns the key, the authorized_keys file and the known_hosts file.
    """
    key = workdir / "id_ed25519"
    subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", alias, "-f", str(key)], check=True
    )
    authorized_keys = workdir / "authorized_keys"
    sshd.write_private_file(str(authorized_keys), key.with_suffix(".pub").read_text())
    host_keys = sshd.ensure_host_keys(ssh_keygen, str(workdir / "host_keys"), user)
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(
        "".join(
            f"{alias} {' '.join(Path(k + '.pub').read_text().split()[:2])}\n" for k in host_keys
        )
    )
    return key, authorized_keys, known_hosts


def run_demo(ssh_command: list[str]) -> int:
    """Run the demo; its failures are SSHDProxyErrors (one line each)."""
    user = sshd.current_user()
    ssh_keygen = sshd.find_program("ssh-keygen", "", "JUPYTER_SSHD_PROXY_SSH_KEYGEN_PATH")
    ssh = shutil.which("ssh")
    if not ssh:
        msg = "ssh not found on PATH; install openssh-client"
        raise PreflightError(msg)
    # Under the home directory, not /tmp: sshd's StrictModes refuses keys
    # files below a world-writable directory.
    base = Path(user.pw_dir, ".cache", "jupyter-sshd-proxy")
    try:
        base.mkdir(parents=True, mode=0o700, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="demo-", dir=base))
    except OSError as error:
        msg = f"cannot make a work directory under {base}: {error.strerror}"
        raise PreflightError(msg) from None
    server = None
    try:
        key, authorized_keys, known_hosts = prepare_keys(workdir, ssh_keygen, user, HOST_ALIAS)
        token = secrets.token_urlsafe(32)
        port = free_port()
        log_path = workdir / "jupyter.log"
        server = start_server(port, token, workdir, authorized_keys, log_path)
        proxy = (
            f"{shlex.quote(sys.executable)} -m jupyter_sshd_proxy proxy http://127.0.0.1:{port}/"
        )
        argv = [
            ssh, "-F", "none",
            "-o", "IdentitiesOnly=yes",
            "-o", f"IdentityFile={key}",
            "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"ProxyCommand={proxy}",
            "-o", f"User={user.pw_name}",
            HOST_ALIAS, *ssh_command,
        ]  # fmt: skip
        say(f"Jupyter server with the sshd proxy at http://127.0.0.1:{port}/ (log: {log_path})")
        say("ssh session through the proxy starts now; exit the shell to stop the demo")
        return subprocess.call(argv, env={**os.environ, "JUPYTER_SSHD_PROXY_TOKEN": token})
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(workdir, ignore_errors=True)


def start_server(
    port: int, token: str, workdir: Path, authorized_keys: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
        "JUPYTER_SSHD_PROXY_HOST_KEY_DIR": str(workdir / "host_keys"),
        "JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES": str(authorized_keys),
        # Only the demo's own host keys, which it pins.
        "JUPYTER_SSHD_PROXY_LEGACY_HOST_KEY": "none",
    }
    argv = [
        sys.executable, "-m", "jupyter_server",
        "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
    ]  # fmt: skip
    if os.getuid() == 0:
        argv.append("--allow-root")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while not server_ready(port, token):
        if server.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            tail = log_path.read_text(errors="replace")[-2000:]
            msg = f"the Jupyter server did not start; its log ends with:\n{tail}"
            raise PreflightError(msg)
        time.sleep(0.2)
    return server


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        server.wait(5)
