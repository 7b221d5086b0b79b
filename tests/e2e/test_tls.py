"""The whole path over TLS, as users reach their Hub: https:// and wss://.

A real Jupyter server serves https with a certificate for 127.0.0.1 from a
throwaway CA (tests/support/tls.py; Jupyter's own --ServerApp.certfile/keyfile). The
client trusts that CA through --ca-file or SSL_CERT_FILE, never by turning
verification off; a certificate it cannot verify, or one for another name,
is one line that names the host and the fix.
"""

from __future__ import annotations

import subprocess

import pytest

from ..support.helpers import Account, SSHClient, pin_host_keys
from ..support.laptop import ServerAt, env_with_token, laptop_home, run_cli, snapshot
from ..support.servers import ServerSetup, remember_pid
from ..support.tls import make_ca

UNTRUSTED = (
    "jupyter-sshd-proxy: TLS: cannot verify the certificate of 127.0.0.1:{port} (unable to "
    "get local issuer certificate); if the Hub uses a private CA, give its certificate "
    "with --ca-file FILE (or set SSL_CERT_FILE)\n"
)
WRONG_NAME = (
    "jupyter-sshd-proxy: TLS: the certificate of localhost:{port} is not valid for "
    "localhost (Hostname mismatch, certificate is not valid for 'localhost'.); use the "
    "host name the certificate was made for in the URL\n"
)


@pytest.fixture(scope="module")
def ca(run_dir):
    """A CA and a certificate for 127.0.0.1 only (so https://localhost/ is the wrong name)."""
    return make_ca(run_dir / "tls", ["127.0.0.1"])


@pytest.fixture(scope="module")
def tls_setup(run_dir, client_key):
    """The client side is the same for every account: the server runs as ours."""
    setup = ServerSetup(Account.current(), run_dir, client_key)
    setup.known_hosts = run_dir / "known_hosts-tls"
    return setup


@pytest.fixture(scope="module")
def server(tls_setup, ca):
    setup = tls_setup
    server = ServerAt(
        setup.account, setup.run_dir, setup.token, dict(setup.env),
        [f"--ServerApp.certfile={ca.cert_file}", f"--ServerApp.keyfile={ca.key_file}"],
        ca_file=ca.ca_file,
    )  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        pid = server.status()["pid"]
        if pid:
            remember_pid(pid)
        server.stop()


@pytest.fixture
def laptop():
    with laptop_home() as home:
        yield home


@pytest.fixture
def ssh(server, tls_setup, client_key):
    """ssh through our ProxyCommand with --ca-file; the host key pinned."""
    client = SSHClient(server, client_key, tls_setup.known_hosts, proxy="jupyter-sshd-proxy")
    client.proxy_args = f"--ca-file {server.ca_file}"
    return client


def _pin(server, setup) -> None:
    """Pin the host keys (made when sshd first started: after the first connection)."""
    if not setup.known_hosts.exists():
        run_cli("doctor", server.url + "/", "--ca-file", str(server.ca_file), token=server.token)
        pin_host_keys(setup.known_hosts, "jupyter-test", setup.host_key_dir)


def test_ssh_through_our_proxy_over_wss(ssh, server, tls_setup):
    _pin(server, tls_setup)
    result = ssh.ssh("echo over-tls")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"over-tls\n"


def test_our_proxy_honours_ssl_cert_file(ssh, server, tls_setup, monkeypatch):
    _pin(server, tls_setup)
    ssh.proxy_args = ""
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
    result = ssh.ssh("echo ssl-cert-file")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ssl-cert-file\n"


def test_websocat_over_wss_with_ssl_cert_file(server, tls_setup, client_key, monkeypatch):
    """websocat 1.13 (native-tls, OpenSSL) takes a CA from SSL_CERT_FILE; never --insecure."""
    _pin(server, tls_setup)
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
    websocat = SSHClient(server, client_key, tls_setup.known_hosts, proxy="websocat")
    assert " wss://127.0.0.1:" in websocat.proxy_command()
    assert "--insecure" not in websocat.proxy_command()
    result = websocat.ssh("echo websocat-tls")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"websocat-tls\n"


def test_config_ssh_with_ca_file_then_ssh_and_doctor(server, laptop):
    config = laptop / ".ssh" / "config"
    result = run_cli(
        "config-ssh", server.url + "/", "--name", "myhub", "--ssh-config", str(config),
        "--ca-file", str(server.ca_file), token=server.token,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    own = laptop / ".ssh" / "jupyter-sshd-proxy"
    assert (
        f" -P -m jupyter_sshd_proxy_client proxy --ca-file {server.ca_file} --token-file "
        f"{own / 'myhub.token'} {server.url}/\n"
    ) in config.read_text()

    ssh = subprocess.run(
        ["ssh", "-F", str(config), "-o", "ControlMaster=no", "myhub", "echo", "configured"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env_with_token(None),
        timeout=60,
    )  # fmt: skip
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout == "configured\n"

    doctor = run_cli(
        "doctor", server.url + "/", "--name", "myhub", "--ssh-config", str(config),
        "--ca-file", str(server.ca_file), token=server.token,
    )  # fmt: skip
    assert doctor.returncode == 0, doctor.stdout
    assert (
        f"ok    tls       certificate valid for 127.0.0.1, trusted by {server.ca_file}\n"
    ) in doctor.stdout
    assert [line.split()[0] for line in doctor.stdout.splitlines()] == ["ok"] * 9


def test_a_certificate_we_cannot_verify_is_one_line(server, laptop):
    port = server.port
    proxy = run_cli("proxy", server.url + "/", token=server.token)
    assert (proxy.returncode, proxy.stderr) == (255, UNTRUSTED.format(port=port))

    before = snapshot(laptop)
    config_ssh = run_cli(
        "config-ssh", server.url + "/", "--ssh-config", str(laptop / ".ssh" / "config"),
        token=server.token,
    )  # fmt: skip
    assert (config_ssh.returncode, config_ssh.stderr) == (1, UNTRUSTED.format(port=port))
    assert snapshot(laptop) == before

    doctor = run_cli("doctor", server.url + "/", token=server.token)
    assert doctor.returncode == 1
    assert f"FAIL  tls       {UNTRUSTED.format(port=port)[20:]}" in doctor.stdout


def test_a_certificate_for_another_name_is_one_line(server, laptop):
    port = server.port
    url = f"https://localhost:{port}/"
    ca_file = str(server.ca_file)
    proxy = run_cli("proxy", "--ca-file", ca_file, url, token=server.token)
    assert (proxy.returncode, proxy.stderr) == (255, WRONG_NAME.format(port=port))

    config_ssh = run_cli(
        "config-ssh", url, "--ca-file", ca_file, "--ssh-config",
        str(laptop / ".ssh" / "config"), token=server.token,
    )  # fmt: skip
    assert (config_ssh.returncode, config_ssh.stderr) == (1, WRONG_NAME.format(port=port))

    doctor = run_cli("doctor", "--ca-file", ca_file, url, token=server.token)
    assert doctor.returncode == 1
    assert f"FAIL  tls       {WRONG_NAME.format(port=port)[20:]}" in doctor.stdout


def test_a_ca_file_that_is_not_a_certificate_is_one_line(server, tmp_path):
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    result = run_cli("proxy", "--ca-file", str(not_pem), server.url + "/", token=server.token)
    assert result.returncode == 255
    assert result.stderr == (
        f"jupyter-sshd-proxy: cannot load the CA certificate from {not_pem}: not a PEM "
        "certificate (NO_CERTIFICATE_OR_CRL_FOUND); give --ca-file a PEM file with the "
        "certificate of the CA that signed the Hub's certificate\n"
    )
