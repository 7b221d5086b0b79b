"""The server extension's REST endpoints, against a real server and real ssh."""

from __future__ import annotations

import json
import re
import socket
import stat
import threading
import urllib.parse

import pytest

from ..support.api import API, call, fingerprint_of
from ..support.helpers import make_key, wait_for


def test_host_keys_are_the_ones_sshd_presents(server, setup):
    status, body = call(server, "GET", "/host-keys")
    assert status == 200
    on_disk = sorted(setup.host_key_dir.glob("*.pub"))
    assert [k["type"] for k in body["keys"]] == ["ssh-ed25519", "ssh-rsa"]
    for key, pub in zip(body["keys"], on_disk):
        assert pub.read_text().split()[1] == key["key"]
        assert key["fingerprint"] == fingerprint_of(pub)


def test_status_counts_open_connections(server, ssh):
    # Connections that the readiness probe and earlier tests opened end shortly.
    wait_for(lambda: call(server, "GET", "/status")[1]["sessions"] == 0, 10, "no connections")
    session = ssh.open_session("sleep 30")
    try:
        body = call(server, "GET", "/status")[1]
        assert body["running"] is True
        assert body["sessions"] == 1
        assert body["version"].startswith("OpenSSH_")
        assert body["last_error"] is None
    finally:
        ssh.end(session)


def test_add_list_use_and_remove_a_key(server, ssh, tmp_path, setup):
    key = make_key(tmp_path / "added")
    line = key.with_suffix(".pub").read_text().strip()
    status, body = call(server, "POST", "/authorized-keys", {"key": line})
    assert status == 201, body
    assert body["fingerprint"] == fingerprint_of(key.with_suffix(".pub"))
    assert ssh.ssh("echo in", identity=key).stdout == b"in\n"
    listed = call(server, "GET", "/authorized-keys")[1]
    assert listed["file"] == str(setup.authorized_keys)
    assert body["fingerprint"] in [k["fingerprint"] for k in listed["keys"]]
    assert call(server, "POST", "/authorized-keys", {"key": line}) == (
        409, {"message": f"the key {body['fingerprint']} is already authorized"}
    )  # fmt: skip
    query = "?fingerprint=" + urllib.parse.quote(body["fingerprint"], safe="")
    assert call(server, "DELETE", "/authorized-keys" + query) == (204, None)
    assert ssh.ssh("true", identity=key).returncode == 255
    assert call(server, "DELETE", "/authorized-keys" + query) == (
        404, {"message": f"no authorized key has the fingerprint {body['fingerprint']}"}
    )  # fmt: skip


def test_other_lines_survive_byte_for_byte(server, run_dir, setup):
    original = setup.authorized_keys.read_bytes()
    extra = b"# a comment the user wrote\n\n  odd line that is not a key\n"
    setup.authorized_keys.write_bytes(original + extra)
    try:
        key = make_key(run_dir / f"bytes-{setup.account.name}")
        line = key.with_suffix(".pub").read_text().strip()
        assert call(server, "POST", "/authorized-keys", {"key": line})[0] == 201
        assert setup.authorized_keys.read_bytes() == original + extra + line.encode() + b"\n"
        assert stat.S_IMODE(setup.authorized_keys.stat().st_mode) == 0o600
        fingerprint = fingerprint_of(key.with_suffix(".pub"))
        query = "?fingerprint=" + urllib.parse.quote(fingerprint, safe="")
        assert call(server, "DELETE", "/authorized-keys" + query)[0] == 204
        assert setup.authorized_keys.read_bytes() == original + extra
    finally:
        setup.authorized_keys.write_bytes(original)


ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
RSA_HEADER_ONLY = "AAAAB3NzaC1yc2E="


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "the key is empty"),
        ("hello world",
         "'hello' is not a supported key type; give a public key line such as the content of "
         "~/.ssh/id_ed25519.pub"),
        ("ssh-ed25519", "the ssh-ed25519 key has no key data"),
        ("ssh-ed25519 not-base64!", "the ssh-ed25519 key data is not valid base64 key data"),
        (f"ssh-rsa {ED25519} me",
         "the key data is of type 'ssh-ed25519', but the line says ssh-rsa"),
        (f'command="rm -rf ~" ssh-ed25519 {ED25519} me',
         'the line starts with options (command="rm -rf ~"); they are refused unless '
         "allow_options is true"),
        (f"ssh-ed25519 {ED25519} me\nssh-ed25519 {ED25519} again", "the key must be a single line"),
        ("ssh-dss AAAAB3NzaC1kc3M= old",
         "'ssh-dss' is not a supported key type; give a public key line such as the content of "
         "~/.ssh/id_ed25519.pub"),
    ],
)  # fmt: skip
def test_bad_key_lines_get_400_with_the_reason(server, line, message):
    assert call(server, "POST", "/authorized-keys", {"key": line}) == (400, {"message": message})


def test_options_only_when_asked_for(server, setup):
    original = setup.authorized_keys.read_bytes()
    try:
        line = f'restrict,from="127.0.0.1" ssh-ed25519 {ED25519} limited'
        status, body = call(
            server, "POST", "/authorized-keys", {"key": line, "allow_options": True}
        )
        assert status == 201, body
        assert body["options"] == 'restrict,from="127.0.0.1"'
        assert setup.authorized_keys.read_bytes().endswith(line.encode() + b"\n")
    finally:
        setup.authorized_keys.write_bytes(original)


def test_concurrent_adds_lose_no_line(server, run_dir, setup):
    original = setup.authorized_keys.read_bytes()
    lines = [
        make_key(run_dir / f"many-{setup.account.name}-{n}").with_suffix(".pub").read_text().strip()
        for n in range(16)
    ]
    results = []

    def add(line):
        results.append(call(server, "POST", "/authorized-keys", {"key": line})[0])

    threads = [threading.Thread(target=add, args=(line,)) for line in lines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == [201] * len(lines)
        content = setup.authorized_keys.read_text()
        assert all(content.count(line.split()[1]) == 1 for line in lines)
        assert content.startswith(original.decode())
    finally:
        setup.authorized_keys.write_bytes(original)


@pytest.mark.parametrize("path", ["/status", "/host-keys", "/authorized-keys"])
@pytest.mark.parametrize("token", [None, "wrong"])
def test_endpoints_need_the_token(server, path, token):
    status, _ = call(server, "GET", path, token=token)
    assert status == 403


def test_a_bad_setting_is_503_with_its_line_never_500(setup):
    bad = setup.server(JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES="keys").start()
    try:
        line = (
            "JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES: 'keys' is relative; use an absolute "
            "path, ~/... or %h/..."
        )
        for path in ("/host-keys", "/authorized-keys"):
            assert call(bad, "GET", path) == (503, {"message": line}), path
        assert call(bad, "POST", "/authorized-keys", {"key": "ssh-ed25519 AAAA"})[0] == 400
        status, body = call(bad, "GET", "/status")
        assert status == 200
        assert body["running"] is False
        assert body["last_error"] == line
        assert f"jupyter-sshd-proxy: {line}" in bad.log()
    finally:
        bad.stop()


# Bad input is a 4xx with its reason, never a 500 or a traceback in the log.


def raw_request(
    server, head: bytes, body: bytes = b"", timeout: float = 10, wait_for_close: bool = False
) -> tuple[bytes, bool]:
    """Send a request as bytes; (the answer, and with wait_for_close whether the
    server then closed the connection)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head_part, _, rest = answer.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head_part).group(1))
        while len(rest) < length:
            rest += sock.recv(65536)
        closed = False
        if wait_for_close:  # a kept-alive connection stays open until the timeout
            try:
                closed = sock.recv(65536) == b""
            except (ConnectionResetError, TimeoutError):
                closed = False
        return head_part + b"\r\n\r\n" + rest, closed


def post_head(server, extra: str) -> bytes:
    return (
        f"POST {API}/authorized-keys HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: token {server.token}\r\n"
        "Content-Type: application/json\r\n"
        f"{extra}\r\n"
    ).encode()


def log_since(server, start: int) -> str:
    return server.log()[start:]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (json.dumps({"key": f"ssh-ed25519 {ED25519} me\ud800"}).encode(),
         "the key line is not valid Unicode (it holds the lone surrogate \\ud800)"),
        (f'{{"key": "ssh-ed25519 {ED25519} caf\xe9"}}'.encode("latin-1"),
         'the request body is not UTF-8 text; send {"key": "ssh-ed25519 AAAA... me@laptop"}'),
        (b"[" * 50000,
         'the JSON in the body is nested too deeply; send {"key": "ssh-ed25519 AAAA... '
         'me@laptop"}'),
        (b'{"key": ',
         'the request body is not JSON; send {"key": "ssh-ed25519 AAAA... me@laptop"}'),
    ],
    ids=["lone surrogate", "not UTF-8", "deeply nested", "not JSON"],
)  # fmt: skip
def test_bad_bodies_get_400_with_the_reason_and_no_traceback(server, setup, body, message):
    before, start = setup.authorized_keys.read_bytes(), len(server.log())
    answer, _ = raw_request(server, post_head(server, f"Content-Length: {len(body)}\r\n"), body)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["message"] == message
    assert setup.authorized_keys.read_bytes() == before
    assert "Traceback" not in log_since(server, start)


def test_a_body_over_the_cap_is_refused_before_it_is_read(server):
    """413 as soon as the headers say the body is too large: the server answers
    without waiting for the 10 MB it announced, and closes the connection
    rather than read them."""
    head = post_head(server, "Content-Length: 10000000\r\n")
    answer, closed = raw_request(server, head, b'{"key": "', wait_for_close=True)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["message"] == (
        "the request body is larger than 65536 bytes; send one public key line"
    )
    assert closed


def test_a_chunked_body_over_the_cap_is_refused(server):
    chunk = b"2000\r\n" + b" " * 0x2000 + b"\r\n"
    head = post_head(server, "Transfer-Encoding: chunked\r\n")
    answer, closed = raw_request(server, head, chunk * 9, wait_for_close=True)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert closed


@pytest.mark.parametrize(
    "wrong",
    [b"another key", b"ssh-ed25519 \xff\xfe not a key\n", None],
    ids=["another-key", "corrupt", "missing"],
)
def test_a_host_public_key_file_that_is_not_the_private_keys_is_not_served(
    server, setup, client_key, run_dir, wrong
):
    """Was broken (issue 14, low): a .pub that no longer matched its private key
    was served and pinned, while sshd presents the private key's own public
    half, so ssh then refused the host. Now the served key is derived from the
    private key (what sshd presents), the .pub is rewritten from it, and a
    client that pins what is served logs in."""
    from ..support.helpers import SSHClient, make_key

    pub = setup.host_key_dir / "ssh_host_ed25519_key.pub"
    original = pub.read_bytes()
    if wrong == b"another key":
        directory = run_dir / f"another-host-key-{setup.account.name}"
        directory.mkdir(mode=0o700, exist_ok=True)
        wrong = make_key(directory / "key").with_suffix(".pub").read_bytes()
    start = len(server.log())
    try:
        if wrong is None:
            pub.unlink()
        else:
            pub.write_bytes(wrong)
        status, body = call(server, "GET", "/host-keys")
        assert status == 200, body
        served = {(k["type"], k["key"]) for k in body["keys"]}
        assert (b"ssh-ed25519", original.split()[1]) in {
            (kind.encode(), key.encode()) for kind, key in served
        }
        assert pub.read_bytes().split()[:2] == original.split()[:2]
        log = log_since(server, start)
        warned = 0 if wrong is None else 1  # a missing one is simply made again
        assert log.count(f"{pub} was not the public key of {pub.with_suffix('')}") == warned, log
        assert "Traceback" not in log
        pins = run_dir / f"known_hosts-served-{setup.account.name}"
        pins.write_text("".join(f"jupyter-test {kind} {key}\n" for kind, key in sorted(served)))
        result = SSHClient(server, client_key, pins).ssh("echo pinned")
        assert result.stdout == b"pinned\n", result.stderr
    finally:
        pub.write_bytes(original)


def test_a_corrupt_host_private_key_is_503_with_the_fix(server, setup):
    private = setup.host_key_dir / "ssh_host_rsa_key"
    original = private.read_bytes()
    start = len(server.log())
    try:
        private.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
        status, body = call(server, "GET", "/host-keys")
        assert status == 503
        assert body["message"].startswith(f"host key {private} cannot be read (Load key ")
        assert body["message"].endswith(
            f"; restore it, or delete {private} and {private}.pub to make a new one "
            "(clients then pin it again: jupyter-sshd-proxy config-ssh)"
        )
        assert "\n" not in body["message"]
        assert "Traceback" not in log_since(server, start)
    finally:
        private.write_bytes(original)
    assert call(server, "GET", "/host-keys")[0] == 200


def test_key_comments_and_options_cannot_forge_log_lines(server, setup):
    original, start = setup.authorized_keys.read_bytes(), len(server.log())
    key = f"ssh-ed25519 {ED25519} me\x1b[31m\u2028jupyter-sshd-proxy: FORGED"
    try:
        status, body = call(server, "POST", "/authorized-keys", {"key": key})
        assert status == 201, body
        line = f'"\x1b[2J" ssh-ed25519 {ED25519}'
        status, _ = call(server, "POST", "/authorized-keys", {"key": line})
        assert status == 400
        log = log_since(server, start)
        assert "\x1b" not in log
        assert "\u2028" not in log
        assert "authorized key SHA256:" in log
        assert "(me\\x1b[31m\\u2028jupyter-sshd-proxy: FORGED)" in log
    finally:
        setup.authorized_keys.write_bytes(original)
