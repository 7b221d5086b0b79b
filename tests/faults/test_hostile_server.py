"""The laptop never trusts the server: a hostile one gets one line and writes nothing.

Each test points our real command line at a fake server (tests/support/hostile.py)
that answers what a compromised or malicious Jupyter server could: lines of
ssh_config in the user name, @cert-authority in a host key, escape sequences
in messages, answers of the wrong shape or size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..support.hostile import (
    AUTHORIZED_KEYS,
    CONTROL,
    ED25519,
    HOST_KEYS,
    STATUS,
    Answer,
    HostileServer,
)
from ..support.laptop import laptop_home, run_cli, snapshot

SUSPICIOUS = "is that URL really your Jupyter server?"
INJECTION = (
    "jovyan\n    ProxyCommand sh -c 'id > /tmp/PWNED'\nHost *\n    LocalCommand id > /tmp/PWNED"
)


# Public keys (their private halves were thrown away): what a server sends as host keys.
ECDSA = (
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDCAQiHP/RXw/QsNL2rIcDz/katm9P66pi2"
    "E40X1MM8MMx/aUQLy3sRtyK8nvkwZJG/ChyAmSlsx4HkIrv3ZszY="
)


@pytest.fixture
def laptop():
    with laptop_home() as home:
        yield home


@pytest.fixture
def hostile():
    """A fake server whose answers are those of a good one until a test changes them."""
    with HostileServer() as server:
        server.answers[("GET", STATUS)] = Answer.json({"running": True, "user": "jovyan"})
        server.answers[("GET", HOST_KEYS)] = Answer.json(
            {"keys": [{"type": "ssh-ed25519", "key": ED25519}]}
        )
        server.answers[("POST", AUTHORIZED_KEYS)] = Answer.json({}, status=201)
        yield server


def config_ssh(server: HostileServer, laptop: Path):
    return run_cli(
        "config-ssh", server.url, "--name", "myhub", "--ssh-config",
        str(laptop / ".ssh" / "config"), token="secret-token",
    )  # fmt: skip


def test_a_good_answer_is_used(hostile, laptop):
    """The fake server's default answers are good ones: config-ssh uses them."""
    result = config_ssh(hostile, laptop)
    assert result.returncode == 0, result.stderr
    assert "    User jovyan\n" in (laptop / ".ssh" / "config").read_text()
    assert (laptop / ".ssh" / "jupyter-sshd-proxy" / "known_hosts").read_text() == (
        f"myhub ssh-ed25519 {ED25519}\n"
    )


def test_a_user_name_with_ssh_config_lines_is_refused(hostile, laptop):
    hostile.answers[("GET", STATUS)] = Answer.json({"running": True, "user": INJECTION})
    before = snapshot(laptop)
    result = config_ssh(hostile, laptop)
    assert result.returncode == 1
    assert result.stderr == (
        f"jupyter-sshd-proxy: {hostile.url} sent a user name that is not a portable one "
        "(letters, digits, '.', '_' and '-', at most 32 characters): "
        "\"jovyan\\n    ProxyCommand sh -c 'id > /tmp/PWNED'\\nHost *...; "
        f"{SUSPICIOUS}\n"
    )
    assert snapshot(laptop) == before
    assert ("POST", AUTHORIZED_KEYS) not in hostile.requests  # not even the key was sent


# (what the server sends as host keys, what the one line shows of it)
BAD_HOST_KEYS = {
    "cert-authority": (
        {"keys": [{"type": "@cert-authority * ssh-ed25519", "key": ED25519}]},
        "host key 1 that is not a public key of a known type: "
        "{'type': '@cert-authority * ssh-ed25519', 'key': 'AAAAC3N...",
    ),
    "a second line in the key": (
        {"keys": [{"type": "ssh-ed25519", "key": f"{ED25519}\n@cert-authority * ssh-ed25519"}]},
        "host key 1 that is not a public key of a known type: "
        "{'type': 'ssh-ed25519', 'key': 'AAAAC3NzaC1lZDI1NTE5AAAAI...",
    ),
    "a comment after the key": (
        {"keys": [{"type": "ssh-ed25519", "key": f"{ED25519} evil"}]},
        "host key 1 that is not a public key of a known type: "
        "{'type': 'ssh-ed25519', 'key': 'AAAAC3NzaC1lZDI1NTE5AAAAI...",
    ),
    "key data of another type": (
        {"keys": [{"type": "ssh-ed25519", "key": ED25519}, {"type": "ssh-ed25519", "key": ECDSA}]},
        "host key 2 that is not a public key of a known type: "
        "{'type': 'ssh-ed25519', 'key': 'AAAAE2VjZHNhLXNoYTItbmlzd...",
    ),
    "an unknown type": (
        {"keys": [{"type": "ssh-dss", "key": ED25519}]},
        "host key 1 that is not a public key of a known type: "
        "{'type': 'ssh-dss', 'key': 'AAAAC3NzaC1lZDI1NTE5AAAAID/dj...",
    ),
    "not base64": (
        {"keys": [{"type": "ssh-ed25519", "key": "not*base64"}]},
        "host key 1 that is not a public key of a known type: "
        "{'type': 'ssh-ed25519', 'key': 'not*base64'}",
    ),
    "keys not a list": (
        {"keys": f"ssh-ed25519 {ED25519}"},
        'a host-keys answer without a list of at most 16 JSON objects as "keys": '
        "'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID/djou8gwoY/VQFm0lj...",
    ),
    "key entries not objects": (
        {"keys": [f"ssh-ed25519 {ED25519}"]},
        'a host-keys answer without a list of at most 16 JSON objects as "keys": '
        "['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID/djou8gwoY/VQFm0l...",
    ),
    "too many keys": (
        {"keys": [{"type": "ssh-ed25519", "key": ED25519}] * 17},
        'a host-keys answer without a list of at most 16 JSON objects as "keys": '
        "[{'type': 'ssh-ed25519', 'key': 'AAAAC3NzaC1lZDI1NTE5AAAA...",
    ),
}


@pytest.mark.parametrize("case", BAD_HOST_KEYS)
def test_a_bad_host_key_is_refused(case, hostile, laptop):
    answer, shown = BAD_HOST_KEYS[case]
    hostile.answers[("GET", HOST_KEYS)] = Answer.json(answer)
    before = snapshot(laptop)
    result = config_ssh(hostile, laptop)
    assert result.returncode == 1
    assert result.stderr == f"jupyter-sshd-proxy: {hostile.url} sent {shown}; {SUSPICIOUS}\n"
    assert snapshot(laptop) == before


def test_no_host_keys_is_refused(hostile, laptop):
    hostile.answers[("GET", HOST_KEYS)] = Answer.json({"keys": []})
    before = snapshot(laptop)
    result = config_ssh(hostile, laptop)
    assert result.returncode == 1
    assert result.stderr == (
        f"jupyter-sshd-proxy: {hostile.url} has no host keys to pin; see the Jupyter server's log\n"
    )
    assert snapshot(laptop) == before


BAD_STATUS = {
    "not JSON": (
        Answer(200, b"<html>hello</html>", {"Content-Type": "text/html"}),
        "answered the sshd-proxy status endpoint with something that is not a JSON object",
    ),
    "a JSON list": (
        Answer.json(["user", "jovyan"]),
        "answered the sshd-proxy status endpoint with something that is not a JSON object",
    ),
    "nested too deep": (
        Answer(200, b"[" * 100_000 + b"]" * 100_000),
        "answered the sshd-proxy status endpoint with something that is not a JSON object",
    ),
    "huge": (
        Answer.json({"running": True, "user": "x" * 2_000_000}),
        "answered sshd-proxy/api/status with more than 1 MiB",
    ),
    "no user": (
        Answer.json({"running": True}),
        "sent a user name that is not a portable one (letters, digits, '.', '_' and '-', "
        "at most 32 characters): None",
    ),
    "a number as user": (
        Answer.json({"running": True, "user": 1000}),
        "sent a user name that is not a portable one (letters, digits, '.', '_' and '-', "
        "at most 32 characters): 1000",
    ),
    "a user name with a space": (
        Answer.json({"running": True, "user": "jo vyan"}),
        "sent a user name that is not a portable one (letters, digits, '.', '_' and '-', "
        "at most 32 characters): 'jo vyan'",
    ),
    "a user name with a percent": (
        Answer.json({"running": True, "user": "%d"}),
        "sent a user name that is not a portable one (letters, digits, '.', '_' and '-', "
        "at most 32 characters): '%d'",
    ),
}


@pytest.mark.parametrize("case", BAD_STATUS)
def test_a_bad_status_answer_is_refused(case, hostile, laptop):
    answer, said = BAD_STATUS[case]
    hostile.answers[("GET", STATUS)] = answer
    before = snapshot(laptop)
    result = config_ssh(hostile, laptop)
    assert result.returncode == 1
    assert result.stderr == f"jupyter-sshd-proxy: {hostile.url} {said}; {SUSPICIOUS}\n"
    assert snapshot(laptop) == before


ESCAPES = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil\r\nHost *\n"
CLEANED = "]0;owned[2J31mevil Host *"


def test_escape_sequences_in_an_api_error_never_reach_the_terminal(hostile, laptop):
    hostile.answers[("POST", AUTHORIZED_KEYS)] = Answer.json({"message": ESCAPES}, 500)
    result = config_ssh(hostile, laptop)
    assert result.returncode == 1
    assert result.stderr.endswith(
        f"jupyter-sshd-proxy: {hostile.url} answered 500 for sshd-proxy authorized-keys "
        f"endpoint: {CLEANED}\n"
    )
    assert not CONTROL.search(result.stderr)


def test_escape_sequences_in_last_error_never_reach_the_terminal(hostile):
    """The WebSocket opens and closes at once; the proxy asks the status why."""
    hostile.answers[("GET", STATUS)] = Answer.json({"running": False, "last_error": ESCAPES})
    result = run_cli("proxy", hostile.url, token="secret-token")
    assert hostile.websocket_upgrades == 1
    assert result.returncode == 255
    assert result.stderr == (f"jupyter-sshd-proxy: sshd could not start on the server: {CLEANED}\n")


def test_escape_sequences_in_the_hubs_progress_never_reach_the_terminal():
    events = [
        {"progress": 10, "message": ESCAPES},
        ["not", "an", "event"],
        {"progress": "\x1b[5m50", "message": "almost\x1b[8m"},
        {"progress": 100, "ready": True, "message": "ready"},
    ]
    stream = "".join(f"data: {json.dumps(event)}\n\n" for event in events)
    with HostileServer() as hub:
        hub.answers[("GET", "/user/alice/sshd/")] = Answer(424, b"")
        hub.answers[("POST", "/hub/api/users/alice/server")] = Answer(202, b"")
        hub.answers[("GET", "/hub/api/users/alice/server/progress")] = Answer(
            200, stream.encode(), {"Content-Type": "text/event-stream"}
        )
        result = run_cli("proxy", "--start", hub.url + "user/alice/", token="secret-token")
    assert result.returncode == 255
    assert result.stderr == (
        "jupyter-sshd-proxy: starting alice's server on the Hub ...\n"
        f"jupyter-sshd-proxy: [10%] {CLEANED}\n"
        "jupyter-sshd-proxy: [[5m50%] almost[8m\n"
        "jupyter-sshd-proxy: [100%] ready\n"
        f"jupyter-sshd-proxy: the Jupyter server at ws{hub.url[4:]}user/alice/sshd/ is not running "
        "(424); start it from the Hub, or connect with `jupyter-sshd-proxy proxy --start`\n"
    )


def test_doctor_prints_no_escape_sequence_and_no_traceback(hostile, laptop):
    hostile.answers[("GET", "/api/status")] = Answer.json({})
    hostile.answers[("GET", "/api")] = Answer.json({"version": ESCAPES})
    hostile.answers[("GET", STATUS)] = Answer.json({"running": False, "last_error": ESCAPES})
    result = run_cli(
        "doctor", hostile.url, "--name", "myhub", "--ssh-config",
        str(laptop / ".ssh" / "config"), token="secret-token",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == ""
    port = hostile.url.rsplit(":", 1)[1].rstrip("/")
    assert result.stdout == (
        "ok    dns       127.0.0.1 resolves to 127.0.0.1\n"
        f"ok    tcp       connected to 127.0.0.1 port {port}\n"
        "note  tls       plain http: use https for anything but a local server\n"
        "ok    token     accepted\n"
        f"ok    server    running (Jupyter Server {CLEANED})\n"
        f"FAIL  route     the WebSocket closed before sshd spoke: {CLEANED}\n"
        "skip  sshd      not checked: an earlier link failed\n"
        "skip  key       not checked: an earlier link failed\n"
        "skip  host key  not checked: an earlier link failed\n"
    )
