"""The laptop's certificate checks (client/certificates.py), with the real
ssh-keygen and a certificate authority made here (no Hub)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from jupyter_sshd_proxy_client import certificates
from jupyter_sshd_proxy_client.keys.grammar import parse_key

from ..support.helpers import VENV_BIN, make_key


@pytest.fixture
def keys(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    user = make_key(directory / "id_ed25519")
    ca = make_key(directory / "ca")
    other = make_key(directory / "other")
    return user, ca, other


def sign(ca, key, *options: str):
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", "ann", *options, f"{key}.pub"], check=True
    )
    return f"{key}-cert.pub"


def public(path) -> object:
    return parse_key(path.with_suffix(".pub").read_text().strip())


def test_a_good_certificate_is_read_and_accepted(keys):
    user, ca, _ = keys
    path = sign(ca, user, "-n", "hub:ann", "-V", "20300101000000:20300101120000", "-z", "42")
    cert = certificates.read_certificate(path)
    assert cert == certificates.Certificate(
        kind="user certificate",
        key_fingerprint=public(user).fingerprint,
        ca_fingerprint=public(ca).fingerprint,
        principals=("hub:ann",),
        valid_after=1893456000,
        valid_before=1893456000 + 12 * 3600,
        serial=42,
    )
    now = 1893456000 + 3600
    assert certificates.problem(cert, public(user), "ann", [public(ca)], now) is None
    assert not certificates.needs_renewal(cert, now)
    assert certificates.needs_renewal(cert, 1893456000 + 9 * 3600 + 1)  # a quarter left


@pytest.mark.parametrize(
    ("options", "user", "why"),
    [
        (["-n", "hub:ben"], "ann", "it names 'hub:ben', not only hub:ann"),
        (["-n", "hub:ann,root"], "ann", "it names 'hub:ann root', not only hub:ann"),
        (["-n", "hub:ann", "-h"], "ann", "it is a host certificate, not a user certificate"),
        (["-n", "hub:ann", "-V", "20200101:20200102"], "ann", "it is not valid now"),
        (["-n", "hub:ann", "-V", "always:forever"], "ann", "it is not a certificate ssh-keygen"),
    ],
)
def test_a_certificate_that_is_not_ours_is_refused(keys, options, user, why):
    key, ca, _ = keys
    if "-V" not in options:
        options = [*options, "-V", "-5m:+1h"]
    cert = certificates.read_certificate(sign(ca, key, *options))
    found = certificates.problem(cert, public(key), user, [public(ca)], time.time())
    assert found is not None
    assert found.startswith(why), found


def test_another_key_or_another_authority_is_refused(keys):
    user, ca, other = keys
    cert = certificates.read_certificate(sign(ca, user, "-n", "hub:ann", "-V", "-5m:+1h"))
    now = time.time()
    assert certificates.problem(cert, public(user), "ann", [public(ca)], now) is None
    assert certificates.problem(cert, public(other), "ann", [public(ca)], now).startswith(
        "it certifies another key"
    )
    assert certificates.problem(cert, public(user), "ann", [public(other)], now).startswith(
        "it is signed by SHA256:"
    )


def test_the_match_lines_and_where_they_go():
    lines = certificates.match_lines(
        "myhub",
        ["/usr/bin/python3", "-m", "jupyter_sshd_proxy_client", "certificate", "--token-file",
         "/home/me/.ssh/j/my hub.token", "https://hub.example.org/"],
        "/home/me/.ssh/j/myhub-cert.pub",
    )  # fmt: skip
    assert lines == [
        'Match host "myhub,myhub.*" exec '
        '"/usr/bin/python3 -m jupyter_sshd_proxy_client certificate '
        "--token-file '/home/me/.ssh/j/my hub.token' https://hub.example.org/\"",
        "    CertificateFile /home/me/.ssh/j/myhub-cert.pub",
    ]
    block = "# begin\n# comment\nHost myhub\n    User x\nHost *\n# end\n"
    assert certificates.with_certificate(block, ["Match a", "    B c"]) == (
        "# begin\n# comment\nMatch a\n    B c\nHost myhub\n    User x\nHost *\n# end\n"
    )
    with pytest.raises(ValueError, match="double quote"):
        certificates.match_lines("myhub", ["/a/b", "x"], '/a/"b')


@pytest.mark.parametrize("forged", ["Type", "Public key", "Signing CA", "Principals"])
def test_a_key_id_that_forges_lines_of_the_listing_is_refused(keys, forged):
    """ssh-keygen -L prints the key ID as it is, newlines included: a hostile
    authority's key ID must not stand in for the fields that follow it."""
    user, ca, other = keys
    fake = {
        "Type": "ssh-ed25519-cert-v01@openssh.com user certificate",
        "Public key": f"ED25519-CERT {public(user).fingerprint}",
        "Signing CA": f"ED25519 {public(ca).fingerprint} (using ssh-ed25519)",
        "Principals": "\n                hub:ann\n        Critical Options: (none)",
    }
    key_id = f'x"\n        {forged}: {fake[forged]}\n        Note: "'
    # A host certificate of another key, signed by another authority, naming
    # hub:ann and root: whichever line is forged, the rest is wrong.
    signer = other if forged == "Signing CA" else ca
    certified = other if forged == "Public key" else user
    options = ["-n", "hub:ann,root" if forged == "Principals" else "hub:ann", "-V", "-5m:+1h"]
    if forged == "Type":
        options.append("-h")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(signer), "-I", key_id, *options, f"{certified}.pub"],
        check=True,
    )
    cert = certificates.read_certificate(f"{certified}-cert.pub")
    found = certificates.problem(cert, public(user), "ann", [public(ca)], time.time())
    assert found == "it is not a certificate ssh-keygen can read"


@pytest.fixture
def stalled_hub():
    """A Hub that accepts connections and never answers (its URL)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    for sock in held:
        sock.close()


def certificate_command(hub: str, user, certificate, token_file):
    started = time.monotonic()
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "jupyter_sshd_proxy_client", "certificate",
         "--token-file", str(token_file), "--user", "ann", "--identity", str(user),
         "--certificate", str(certificate), hub],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return result, time.monotonic() - started


def test_a_certificate_still_valid_is_kept_when_the_hub_stalls(keys, stalled_hub, tmp_path):
    """The Match exec runs before every connection. With a certificate due
    for renewal (a quarter of its life left) but valid for 20 more minutes,
    a Hub that stalled held ssh 10 s, then failed the exec: ssh then offered
    no certificate, and the login failed though the certificate was good."""
    user, ca, _ = keys
    certificate = sign(ca, user, "-n", "hub:ann", "-V", "-3h:+20m")
    before = Path(certificate).read_text()
    token_file = tmp_path / "token"
    token_file.write_text("secret-token-42\n")
    token_file.chmod(0o600)
    result, seconds = certificate_command(stalled_hub, user, certificate, token_file)
    until = certificates.read_certificate(certificate).valid_before
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"jupyter-sshd-proxy: cannot renew the certificate {certificate}: no complete answer "
        f"from {stalled_hub}services/ssh-ca/ within 5s; the current one is valid until "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(until))} UTC\n"
    )
    assert seconds < 8
    assert Path(certificate).read_text() == before


def test_an_expired_certificate_is_not_kept_when_the_hub_stalls(keys, stalled_hub, tmp_path):
    user, ca, _ = keys
    certificate = sign(ca, user, "-n", "hub:ann", "-V", "-3h:-1m")
    token_file = tmp_path / "token"
    token_file.write_text("secret-token-42\n")
    token_file.chmod(0o600)
    result, _ = certificate_command(stalled_hub, user, certificate, token_file)
    assert result.returncode == 1
    assert result.stderr == (
        f"jupyter-sshd-proxy: no complete answer from {stalled_hub}services/ssh-ca/ within 10s\n"
    )


def test_a_token_file_with_a_line_break_never_prints_the_token(keys, tmp_path):
    """The certificate command read its token file with fewer checks than the
    ProxyCommand: a token with a line break inside reached http.client,
    whose ValueError (the header, token and all) became the last-resort line
    on stderr, which ssh shows on the terminal before every connection."""
    from ..support.attack_server import ScriptedServer

    user, ca, _ = keys
    keys_answer = json.dumps({"keys": [Path(f"{ca}.pub").read_text().strip()]}).encode()

    def hub(sock, request, stop):
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(keys_answer)
            + keys_answer
        )

    token_file = tmp_path / "token"
    token_file.write_text("secret-part-one\nsecret-part-two\n")
    token_file.chmod(0o600)
    with ScriptedServer(hub) as server:
        result, _ = certificate_command(server.url, user, f"{user}-cert.pub", token_file)
    assert result.returncode == 1
    assert "secret-part" not in result.stderr
    assert result.stderr == (
        f"jupyter-sshd-proxy: token file {token_file} does not hold a token: it has spaces, "
        "control characters or non-ASCII letters in it, which a token never has; copy the "
        "token again\n"
    )
    assert [request.path for request in server.requests] in ([], ["/services/ssh-ca/keys"])
