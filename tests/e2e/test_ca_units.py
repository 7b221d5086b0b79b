"""The certificate authority's pure parts, and its signing with the real ssh-keygen
(no Hub: tests/hub/test_ca_hub.py runs it as a JupyterHub service)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from jupyter_sshd_proxy.ca import signing, state
from jupyter_sshd_proxy.ca.service import Authority
from jupyter_sshd_proxy_client.errors import PreflightError

from ..support.helpers import connectable, free_port, http_request, make_key, wait_for


@pytest.fixture
def authority(tmp_path):
    state_dir = state.ensure_state_dir(str(tmp_path / "ca"))
    ca_key = state.ensure_ca_key("ssh-keygen", state_dir, None)
    return Authority("ssh-keygen", state_dir, ca_key, state.public_key_of("ssh-keygen", ca_key))


@pytest.fixture
def user_key(tmp_path):
    directory = tmp_path / "laptop"
    directory.mkdir(mode=0o700)
    return make_key(directory / "id_ed25519")


@pytest.mark.parametrize(
    ("name", "principal"),
    [
        ("ann", "hub:ann"),
        ("ann.b@example.org", "hub:ann.b@example.org"),
        ("a+b-c_d", "hub:a+b-c_d"),
    ],
)
def test_the_principal_names_the_hub_user_in_a_form_no_unix_name_has(name, principal):
    assert signing.principal_for(name) == principal


@pytest.mark.parametrize("name", ["", "a,b", "a b", "a\nb", "jövyan", "x" * 201, "a:b"])
def test_a_hub_name_that_cannot_be_one_principal_is_refused(name):
    with pytest.raises(signing.SigningError, match="cannot be an SSH certificate principal"):
        signing.principal_for(name)


def test_validity_defaults_and_is_bounded():
    assert signing.validity(None, 43200, 86400) == 43200
    assert signing.validity(None, 43200, 3600) == 3600
    assert signing.validity(60, 43200, 86400) == 60
    with pytest.raises(signing.SigningError) as refused:
        signing.validity(86401, 43200, 86400)
    assert str(refused.value) == (
        "validity_seconds=86401 is more than this authority gives (86400 seconds); "
        "ask for 86400 or less"
    )
    for bad in (0, -5, 1.5, "60", True):
        with pytest.raises(signing.SigningError, match="not a positive whole number"):
            signing.validity(bad, 43200, 86400)


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600), ("90m", 5400), ("12h", 43200), ("1d", 86400)]
)
def test_durations(text, seconds):
    assert signing.parse_duration(text, "--validity") == seconds


@pytest.mark.parametrize("text", ["", "0", "12x", "-1h", "1.5h"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="is not a duration"):
        signing.parse_duration(text, "--validity")


def test_only_a_plain_public_key_is_certified(user_key, authority):
    line = user_key.with_suffix(".pub").read_text()
    assert signing.public_key(line).type == "ssh-ed25519"
    for bad, why in [
        (None, "public_key must be a string"),
        ("", "public_key refused: the key is empty"),
        ('command="x" ' + line, "public_key refused: the line starts with options"),
        (line.strip() + "\nssh-ed25519 AAAA", "public_key refused: the key must be a single line"),
        (
            "ssh-ed25519 AAAA",
            "public_key refused: the ssh-ed25519 key data is not a valid key (truncated)",
        ),
    ]:
        with pytest.raises(signing.SigningError) as refused:
            signing.public_key(bad)
        assert str(refused.value).startswith(why), str(refused.value)
    # A certificate is not a key to certify.
    issued = authority.sign("ann", signing.public_key(line), 600)
    with pytest.raises(signing.SigningError, match="refused"):
        signing.public_key(issued["certificate"])


def test_the_signing_command_line(user_key):
    key = signing.public_key(user_key.with_suffix(".pub").read_text())
    argv = signing.sign_argv("ssh-keygen", "/ca/key", "ann", key, 3600, 7, "/w/key.pub")
    assert argv == [
        "ssh-keygen", "-q", "-s", "/ca/key", "-I", f"ann {key.fingerprint}", "-n", "hub:ann",
        "-V", "-300s:+3600s", "-z", "7", "-O", "clear", "-O", "permit-pty",
        "-O", "permit-port-forwarding", "-O", "permit-agent-forwarding",
        "-O", "permit-user-rc", "/w/key.pub",
    ]  # fmt: skip


def test_a_certificate_as_ssh_keygen_reads_it(authority, user_key, tmp_path):
    key = signing.public_key(user_key.with_suffix(".pub").read_text())
    issued = authority.sign("ann", key, 3600)
    cert = tmp_path / "laptop" / "id_ed25519-cert.pub"
    cert.write_text(issued["certificate"] + "\n")
    shown = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True
    ).stdout
    assert "Type: ssh-ed25519-cert-v01@openssh.com user certificate" in shown
    assert f'Key ID: "ann {key.fingerprint}"' in shown
    assert f"Serial: {issued['serial']}" in shown
    assert f"Signing CA: ED25519 {authority.signing_key.fingerprint}" in shown
    principals = shown.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == ["hub:ann"]
    extensions = shown.split("Extensions:")[1].split()
    assert sorted(extensions) == sorted(signing.EXTENSIONS)
    assert issued["principal"] == "hub:ann"
    assert issued["key_fingerprint"] == key.fingerprint
    assert not [name for name in os.listdir(authority.state_dir) if name.startswith("sign-")]


def test_serials_increase_and_survive_a_restart(authority, user_key):
    key = signing.public_key(user_key.with_suffix(".pub").read_text())
    first = authority.sign("ann", key, 600)["serial"]
    second = authority.sign("ben", key, 600)["serial"]
    assert second == first + 1
    again = Authority(
        "ssh-keygen", authority.state_dir, authority.ca_key, authority.signing_key
    )  # a restarted service, the same state directory
    assert again.sign("ann", key, 600)["serial"] == second + 1


def test_serials_are_unique_under_concurrency(authority):
    got: list[int] = []

    def take():
        for _ in range(20):
            got.append(state.next_serial(authority.state_dir))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(1, 81))


def test_the_ca_key_is_made_once_private_and_kept(tmp_path):
    state_dir = state.ensure_state_dir(str(tmp_path / "ca"))
    path = state.ensure_ca_key("ssh-keygen", state_dir, None)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    public = state.public_key_of("ssh-keygen", path)
    assert state.ensure_ca_key("ssh-keygen", state_dir, None) == path
    assert state.public_key_of("ssh-keygen", path) == public
    with pytest.raises(PreflightError, match="does not exist; mount it there"):
        state.ensure_ca_key("ssh-keygen", state_dir, str(tmp_path / "missing"))


def test_a_shared_state_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(PreflightError, match="must be the service's own and private"):
        state.ensure_state_dir(str(shared))


def test_a_rotated_key_is_published_beside_the_signing_key(authority, tmp_path):
    other = make_key(tmp_path / "old_ca")
    authority.trusted = state.read_public_keys(str(other) + ".pub")
    published = authority.public_keys()
    assert published[0] == authority.signing_key
    assert len(published) == 2
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    with pytest.raises(PreflightError, match="holds a line that is not a public key"):
        state.read_public_keys(str(bad))


def test_the_service_refuses_to_start_without_a_scope_to_check(tmp_path):
    """Started outside the Hub with no JUPYTERHUB_SERVICE_NAME (an external
    service), HubAuth has no access scope: any token of a user, whatever its
    scopes, would have had certificates. The service must not start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["JUPYTERHUB_API_TOKEN"] = "x" * 32  # an external service's own token
    env["JUPYTERHUB_API_URL"] = "http://127.0.0.1:9/hub/api"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "jupyter_sshd_proxy.ca", f"--state-dir={tmp_path / 'ca'}",
             f"--url=http://127.0.0.1:{free_port()}"],
            capture_output=True, text=True, env=env, timeout=20, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the authority served with no scope to check")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "ssh-ca: no access scope to check tokens against (JUPYTERHUB_SERVICE_NAME and "
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES are unset); set JUPYTERHUB_SERVICE_NAME=ssh-ca, "
        "as the Hub does for the services it starts"
    )
    assert "x" * 32 not in result.stderr


def test_a_weak_rsa_key_is_not_certified(authority, tmp_path):
    """sshd takes RSA keys of 1024 bits (RequiredRSASize): the authority does
    not certify one; 2048 bits is the least it signs."""
    for bits in (1024, 2048):
        path = tmp_path / f"rsa{bits}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "rsa", "-b", str(bits), "-N", "", "-f", str(path)],
            check=True,
        )
        key = signing.public_key(path.with_suffix(".pub").read_text())
        if bits == 2048:
            assert authority.sign("ann", key, 600)["key_type"] == "ssh-rsa"
            continue
        with pytest.raises(signing.SigningError) as refused:
            authority.sign("ann", key, 600)
        assert str(refused.value) == (
            "public_key refused: a 1024-bit RSA key is too weak to certify (2048 bits at "
            "least); use an ed25519 key"
        )
        assert refused.value.status == 400


def start_authority(tmp_path, port: int, log, **popen) -> subprocess.Popen:
    """The service on port, as the Hub starts it (its Hub unreachable), its
    output in log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env.update(
        JUPYTERHUB_SERVICE_NAME="ssh-ca", JUPYTERHUB_API_TOKEN="x" * 32,
        JUPYTERHUB_API_URL="http://127.0.0.1:9/hub/api",
    )  # fmt: skip
    with open(log, "wb") as stream:
        return subprocess.Popen(
            [sys.executable, "-m", "jupyter_sshd_proxy.ca", f"--state-dir={tmp_path / 'ca'}",
             f"--url=http://127.0.0.1:{port}"],
            stdout=stream, stderr=subprocess.STDOUT, env=env, **popen,
        )  # fmt: skip


def test_a_token_in_the_url_is_never_logged(tmp_path):
    """A client that puts its token in the query string is refused (401), and
    the service's log (tornado's warning of each refusal included) holds
    neither the token nor the query. A body of 1 MiB is refused unread."""
    secret = "s3cr3t" * 6
    port = free_port()
    log = tmp_path / "ca.log"
    service = start_authority(tmp_path, port, log)
    try:
        wait_for(lambda: connectable(port), 30, "the authority listening")
        for path in (f"/sign?token={secret}", f"/sign?x=%25s{secret}"):
            status, body = http_request(port, "POST", path, None, body=b"{}")
            assert status == 401, body
        status, _ = http_request(port, "POST", f"/sign?token={secret}", None, body=b"{")
        assert status == 401
        # A body is read whole before the token is looked at: tornado's
        # default limit (100 MB) let anyone hold that much memory per request.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(b"POST /sign HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
            assert connection.recv(100).startswith(b"HTTP/1.1 400 ")  # refused unread
    finally:
        service.terminate()
        service.wait(timeout=30)
    text = log.read_text()
    assert "401 POST /sign" in text  # the refusals are logged
    assert secret not in text
    assert "?" not in text


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_service_stops_at_the_hubs_signal_even_with_sigint_ignored(tmp_path, signum):
    """The Hub stops a service with SIGINT (SIGTERM 10 s later). A Hub started
    with nohup or `&` hands SIGINT down ignored: the service still stops at
    once, and says so."""
    port = free_port()
    log = tmp_path / "ca.log"
    service = start_authority(
        tmp_path, port, log, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
    )
    try:
        wait_for(lambda: connectable(port), 30, "the authority listening")
        service.send_signal(signum)
        assert service.wait(timeout=5) == 0
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(timeout=10)
    assert log.read_text().splitlines()[-1].endswith("] ssh-ca: stopping")
