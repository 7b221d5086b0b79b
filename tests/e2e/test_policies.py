"""What ssh may do (c.SSHDProxy.policy), with the real clients: each thing a
policy allows works, each thing it refuses is refused, in sshd's own words.

Runs once: as root, with the server as the unprivileged account.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import pytest

from jupyter_sshd_proxy import sshd
from jupyter_sshd_proxy.settings import SSHDProxy
from jupyter_sshd_proxy_client.errors import ConfigError

from ..support.helpers import SSHClient, connectable, free_port, terminate, wait_for

SFTP_ONLY = b"This service allows sftp connections only."


@pytest.fixture
def once(account):
    if account.is_current and os.getuid() == 0:
        pytest.skip("runs once, with the server as the unprivileged account")


@pytest.fixture(scope="module")
def no_forwarding(setup):
    with setup.running(JUPYTER_SSHD_PROXY_POLICY="no-forwarding") as server:
        yield server


@pytest.fixture(scope="module")
def sftp_only(setup):
    with setup.running(JUPYTER_SSHD_PROXY_POLICY="sftp-only") as server:
        yield server


def client(server, setup, client_key) -> SSHClient:
    return SSHClient(server, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")


class Target:
    """A server that notes every connection and sends "hello": on a loopback
    port, or on a unix socket anyone may connect to."""

    def __init__(self, path: str | None = None):
        if path is None:
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
            os.chmod(path, 0o777)
            self.sock.listen()
        self.path = path
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.sendall(b"hello")

    def close(self):
        self.sock.close()
        if self.path:
            os.unlink(self.path)


def read_through(port: int) -> bytes:
    """What arrives on a connection to 127.0.0.1:port before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        received = b""
        while chunk := conn.recv(100):
            received += chunk
    return received


def saying(argv: list[str]) -> list[str]:
    """argv with ssh's messages at LogLevel INFO (ssh takes the first LogLevel given)."""
    return [word if word != "LogLevel=ERROR" else "LogLevel=INFO" for word in argv]


def forwarding(ssh: SSHClient, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        saying(ssh.ssh_argv(options=["-N", *options])),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=ssh.env,
    )  # fmt: skip


def local_forward_is_refused(ssh: SSHClient, destination: str) -> bytes:
    """ssh -L to destination: ssh listens, sshd refuses each channel; ssh's words."""
    listen = free_port()
    forwarder = forwarding(ssh, "-L", f"127.0.0.1:{listen}:{destination}")
    try:
        wait_for(lambda: forwarder.poll() is not None or connectable(listen), 20, "ssh -L")
        assert read_through(listen) == b""
    finally:
        _, said = terminate(forwarder)
    return said


def remote_forward_is_refused(ssh: SSHClient, forward: str) -> bytes:
    result = subprocess.run(
        saying(ssh.ssh_argv("true", options=["-o", "ExitOnForwardFailure=yes", "-R", forward])),
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30, env=ssh.env, check=False,
    )  # fmt: skip
    assert result.returncode == 255, result.stderr
    return result.stderr


def assert_forwarding_refused(ssh: SSHClient) -> None:
    """-L and -R, to and from TCP ports and unix sockets: none of them carries a
    byte; ssh and sshd say so in their own words."""
    target = Target()
    unix_target = Target(f"/tmp/jsp-policy-{os.getpid()}.sock")
    log_before = len(ssh.server.log())
    try:
        said = local_forward_is_refused(ssh, f"127.0.0.1:{target.port}")
        assert b"open failed: administratively prohibited" in said, said
        said = local_forward_is_refused(ssh, unix_target.path)
        assert b"open failed" in said, said
        said = remote_forward_is_refused(ssh, f"127.0.0.1:{free_port()}:127.0.0.1:{target.port}")
        assert b"remote port forwarding failed" in said, said
        socket_path = f"/tmp/jsp-policy-{os.getpid()}-remote.sock"
        said = remote_forward_is_refused(ssh, f"{socket_path}:127.0.0.1:{target.port}")
        assert b"remote port forwarding failed" in said, said
        assert not os.path.exists(socket_path)
        assert target.connections == 0
        assert unix_target.connections == 0
        log = ssh.server.log()[log_before:]
        assert "refused local port forward" in log
        assert "refused streamlocal port forward" in log
    finally:
        target.close()
        unix_target.close()


# The configuration, without a server.


def effective_options(tmp_path, policy: str, extra=()) -> list[str]:
    """sshd -T on the configuration rendered for a policy: what sshd will do."""
    sshd_path = sshd.find_program("sshd", "", "c.SSHDProxy.sshd_path")
    keygen = sshd.find_program("ssh-keygen", "", "c.SSHDProxy.ssh_keygen_path")
    user = sshd.current_user()
    config = tmp_path / "sshd_config"
    config.write_text(
        sshd.render_sshd_config(
            port=2222,
            host_keys=sshd.ensure_host_keys(keygen, str(tmp_path / "keys"), user),
            authorized_keys_files=[str(tmp_path / "authorized_keys")],
            user=user,
            log_level="INFO",
            version=sshd.sshd_version(sshd_path),
            extra_options=extra,
            policy=policy,
        )
    )
    return subprocess.run(
        [sshd_path, "-T", "-f", str(config)], capture_output=True, text=True, check=True
    ).stdout.splitlines()


FORWARDING_OFF = {
    "allowtcpforwarding no",
    "allowstreamlocalforwarding no",
    "allowagentforwarding no",
    "x11forwarding no",
    "permittunnel no",
    "disableforwarding yes",
    "permitopen none",
    "permitlisten none",
}


@pytest.mark.parametrize("policy", ["no-forwarding", "sftp-only"])
def test_sshd_takes_each_policys_options(tmp_path, policy):
    effective = set(effective_options(tmp_path, policy, extra=["MaxSessions 20"]))
    assert effective >= FORWARDING_OFF
    assert "maxsessions 20" in effective
    sftp_only = {"forcecommand internal-sftp", "permittty no", "permituserrc no"}
    assert (sftp_only <= effective) == (policy == "sftp-only")


def test_the_policy_all_leaves_sshds_forwarding_on(tmp_path):
    effective = set(effective_options(tmp_path, "all"))
    assert {"allowtcpforwarding yes", "disableforwarding no", "permittty yes"} <= effective
    assert "forcecommand none" in effective


def test_older_sshd_gets_only_the_options_it_knows():
    old = sshd.policy_options("no-forwarding", sshd.SSHDVersion(7, 3, "OpenSSH_7.3"))
    assert "DisableForwarding yes" not in old
    assert "PermitListen none" not in old
    assert "AllowTcpForwarding no" in old
    assert sshd.policy_options("all", sshd.SSHDVersion(9, 2, "OpenSSH_9.2")) == []


@pytest.mark.parametrize("keyword", ["AllowTcpForwarding yes", "PermitOpen any", "PermitTTY yes"])
def test_extra_options_cannot_reopen_what_the_policy_closes(keyword):
    for settings in (
        {"policy": "sftp-only", "extra_options": [keyword]},
        {"extra_options": [keyword], "policy": "sftp-only"},  # the other order
    ):
        with pytest.raises(ConfigError, match=f"{keyword.split()[0]} is set by the policy"):
            SSHDProxy(**settings)
    if keyword != "PermitTTY yes":
        with pytest.raises(ConfigError, match="JUPYTER_SSHD_PROXY_POLICY"):
            SSHDProxy(policy="no-forwarding", extra_options=[keyword])
    assert SSHDProxy(policy="all", extra_options=[keyword]).extra_options


def test_the_policy_from_its_variable(monkeypatch):
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_POLICY", " SFTP-Only ")
    assert SSHDProxy().policy == "sftp-only"
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_POLICY", "shell")
    with pytest.raises(ConfigError, match="JUPYTER_SSHD_PROXY_POLICY='shell' is not an SSH policy"):
        SSHDProxy()


# no-forwarding


def test_no_forwarding_keeps_shells_commands_and_file_transfer(
    once, no_forwarding, setup, client_key, tmp_path
):
    ssh = client(no_forwarding, setup, client_key)
    result = ssh.ssh("echo $((6 * 7))")
    assert (result.returncode, result.stdout) == (0, b"42\n"), result.stderr
    shell = subprocess.run(
        ssh.ssh_argv(options=["-tt"]), input=b"tty; exit 3\n",
        capture_output=True, timeout=60, env=ssh.env, check=False,
    )  # fmt: skip
    assert shell.returncode == 3, shell.stdout + shell.stderr
    assert b"/dev/pts/" in shell.stdout
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(100_000))
    assert_file_transfer_works(ssh, tmp_path, data, rsync=True)


def test_no_forwarding_refuses_every_forward(once, no_forwarding, setup, client_key):
    assert_forwarding_refused(client(no_forwarding, setup, client_key))


# sftp-only


def test_sftp_only_lets_sftp_and_scp_through(once, sftp_only, setup, client_key, tmp_path):
    ssh = client(sftp_only, setup, client_key)
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(100_000))
    assert_file_transfer_works(ssh, tmp_path, data, rsync=False)


def test_sftp_only_refuses_shells_commands_and_terminals(once, sftp_only, setup, client_key):
    ssh = client(sftp_only, setup, client_key)
    result = ssh.ssh("echo hello")
    assert result.returncode == 1
    assert b"hello" not in result.stdout
    assert SFTP_ONLY in result.stdout + result.stderr
    for options, what in (([], "a shell"), (["-tt"], "a terminal")):
        shell = subprocess.run(
            saying(ssh.ssh_argv(options=options)), input=b"echo hello\n",
            capture_output=True, timeout=60, env=ssh.env, check=False,
        )  # fmt: skip
        assert shell.returncode != 0, what
        assert b"hello" not in shell.stdout, what
        if options:
            assert b"PTY allocation request failed" in shell.stderr, shell.stderr
        else:
            assert SFTP_ONLY in shell.stdout + shell.stderr, shell


def test_sftp_only_refuses_rsync_and_legacy_scp(once, sftp_only, setup, client_key, tmp_path):
    """Both run a command on the server (rsync --server, scp -t)."""
    ssh = client(sftp_only, setup, client_key)
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 1000)
    result = ssh.run(["rsync", "-e", ssh.rsync_shell(), str(data), ssh.remote("r.bin")])
    assert result.returncode != 0
    # rsync reads sshd's line as its protocol, and says so.
    assert b"protocol version mismatch -- is your shell clean?" in result.stderr, result.stderr
    result = ssh.run(["scp", "-O", *ssh.options(), str(data), ssh.remote("o.bin")])
    assert result.returncode != 0
    assert SFTP_ONLY in result.stdout + result.stderr, result.stderr
    listing = sftp_batch(ssh, tmp_path, "ls -1\n")
    assert b"r.bin" not in listing
    assert b"o.bin" not in listing


def test_sftp_only_refuses_every_forward(once, sftp_only, setup, client_key):
    assert_forwarding_refused(client(sftp_only, setup, client_key))


# shared


def sftp_batch(ssh: SSHClient, tmp_path, commands: str) -> bytes:
    batch = tmp_path / "batch"
    batch.write_text(commands)
    result = ssh.run(["sftp", "-b", str(batch), *ssh.options(), ssh.host_alias])
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_file_transfer_works(ssh: SSHClient, tmp_path, data, rsync: bool) -> None:
    remote = f"policy-{os.getpid()}"
    sftp_batch(ssh, tmp_path, f"-mkdir {remote}\nput {data} {remote}/sftp.bin\n")
    result = ssh.run(["scp", "-s", *ssh.options(), str(data), ssh.remote(f"{remote}/scp.bin")])
    assert result.returncode == 0, result.stderr
    back = tmp_path / "back"
    back.mkdir()
    # OpenSSH 9's scp speaks sftp too, without -s.
    result = ssh.run(["scp", *ssh.options(), ssh.remote(f"{remote}/scp.bin"), str(back)])
    assert result.returncode == 0, result.stderr
    sftp_batch(ssh, tmp_path, f"get {remote}/sftp.bin {back}/sftp.bin\n")
    assert (back / "scp.bin").read_bytes() == data.read_bytes()
    assert (back / "sftp.bin").read_bytes() == data.read_bytes()
    if rsync:
        shell = ["-e", ssh.rsync_shell()]
        result = ssh.run(["rsync", *shell, str(data), ssh.remote(f"{remote}/rsync.bin")])
        assert result.returncode == 0, result.stderr
        result = ssh.run(["rsync", *shell, ssh.remote(f"{remote}/rsync.bin"), str(back / "r")])
        assert result.returncode == 0, result.stderr
        assert (back / "r").read_bytes() == data.read_bytes()
    sftp_batch(ssh, tmp_path, f"-rm {remote}/*\nrmdir {remote}\n")
