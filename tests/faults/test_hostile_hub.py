"""The laptop never trusts the Hub: config-ssh with a Hub's URL against a hostile one.

A fake Hub on 127.0.0.1 (tests/support/hostile.py) is the attacker here: it answers
the Hub's API with server names full of ssh_config and shell syntax, user
names that would add lines to ~/.ssh/config, tokens with more scopes than
asked for, escape sequences. A server name that cannot be an ssh host name
safely is left out with one escaped line; anything else wrong is one line
and nothing written. (The happy path runs on a real JupyterHub in
test_hub_servers.py.)
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
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
from ..support.laptop import env_with_token, laptop_home, run_cli, snapshot

TOKEN = "pasted-token-8c1f2e"
NEW_TOKEN = "ssh-token-0123456789abcdef"
USER = "alice"


def server_model(name: str, ready: bool = True) -> dict:
    return {
        "name": name,
        "ready": ready,
        "pending": None,
        "stopped": not ready,
        "last_activity": "2026-01-02T03:04:05.000000Z",
        "url": f"/user/{USER}/{name}/",
    }


def a_hub(server: HostileServer, servers: dict, user: object = USER, scopes=None) -> None:
    """server answers as a Hub of USER with these servers (running ones answer too)."""
    server.answers[("GET", "/hub/api/")] = Answer.json({"version": "5.2.1"})
    server.answers[("GET", "/hub/api/user")] = Answer.json(
        {"name": user, "kind": "user", "scopes": [f"tokens!user={USER}"], "servers": servers}
    )
    server.answers[("POST", f"/hub/api/users/{USER}/tokens")] = Answer.json(
        {
            "token": NEW_TOKEN,
            "id": "a9",
            "scopes": scopes or [f"access:servers!user={USER}", f"read:servers!user={USER}"],
            "expires_at": "2099-01-01T00:00:00.000000Z",
        },
        status=201,
    )
    server.answers[("DELETE", f"/hub/api/users/{USER}/tokens/a9")] = Answer(204)
    for name, model in servers.items():
        if not isinstance(model, dict) or not model.get("ready"):
            continue
        prefix = f"/user/{USER}/" + (f"{name}/" if name else "")
        prefix = prefix.rstrip("/")
        server.answers[("GET", prefix + STATUS)] = Answer.json({"running": True, "user": "jovyan"})
        server.answers[("GET", prefix + HOST_KEYS)] = Answer.json(
            {"keys": [{"type": "ssh-ed25519", "key": ED25519}]}
        )
        server.answers[("POST", prefix + AUTHORIZED_KEYS)] = Answer.json({}, status=201)


@pytest.fixture
def laptop():
    with laptop_home() as home:
        yield home


def config_ssh(server: HostileServer, laptop: Path, *more: str, token: str | None = TOKEN):
    return run_cli(
        "config-ssh", server.url, "--name", "myhub", "--ssh-config",
        str(laptop / ".ssh" / "config"), *more, token=token,
    )  # fmt: skip


def without_keys(files: dict) -> dict:
    """A laptop's files but the key config-ssh makes before it asks for a token,
    and the empty lock file that its edits of ~/.ssh take (files.locked)."""
    return {
        path: what
        for path, what in files.items()
        if not path.name.startswith("id_") and path.name != ".jupyter-sshd-proxy.lock"
    }


def ours(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("jupyter-sshd-proxy: ")]


UNSAFE_NAMES = {
    "with space": "'with space'",
    "semi;colon": "'semi;colon'",
    "new\nline": "'new\\nline'",
    "x" * 10_000: "'" + "x" * 76 + "...",
    "dot.ted": "'dot.ted'",
    "quote'd": '"quote\'d"',
    "dollar$(id)": "'dollar$(id)'",
    "\x1b]0;owned\x07": "'\\x1b]0;owned\\x07'",
    "-oProxyCommand=id": "'-oProxyCommand=id'",
    "star*": "'star*'",
    "percent%n": "'percent%n'",
}


def test_unsafe_server_names_are_left_out_one_line_each(laptop):
    servers = {"": server_model(""), "gpu": server_model("gpu")}
    servers.update({name: server_model(name) for name in UNSAFE_NAMES})
    with HostileServer() as hub:
        a_hub(hub, servers)
        result = config_ssh(hub, laptop)
    assert result.returncode == 0, result.stderr
    assert not CONTROL.search(result.stderr.replace("\n", ""))
    lines = ours(result.stderr)
    for shown in UNSAFE_NAMES.values():
        (line,) = [
            line
            for line in lines
            if line.startswith(f"jupyter-sshd-proxy: left out the server {shown}")
        ]
        assert line.endswith(
            "(letters, digits, '_' and '-', starting with a letter or digit, at most 63)"
        )
    config = (laptop / ".ssh" / "config").read_text()
    hosts = [line for line in config.splitlines() if line.startswith("Host ")]
    assert hosts[:2] == ["Host myhub", "Host myhub.gpu"]
    assert hosts[2].startswith("Host myhub.* !myhub.gpu ")
    assert not any(word in config for word in ("with space", "semi;colon", "owned", "dollar"))
    assert (laptop / ".ssh/jupyter-sshd-proxy/myhub.token").read_text() == NEW_TOKEN + "\n"


def test_names_that_differ_only_in_case_are_both_left_out(laptop):
    servers = {"": server_model(""), "gpu": server_model("gpu"), "GPU": server_model("GPU")}
    with HostileServer() as hub:
        a_hub(hub, servers)
        result = config_ssh(hub, laptop)
    assert result.returncode == 0, result.stderr
    assert ours(result.stderr)[0] == (
        "jupyter-sshd-proxy: left out the servers 'gpu' and 'GPU': ssh cannot tell names "
        "apart that differ only in case"
    )
    assert "myhub.gpu" not in (laptop / ".ssh" / "config").read_text().lower()


@pytest.mark.parametrize(
    "user",
    [
        "alice\nHost *\n    ProxyCommand id",
        "../alice",
        "-oProxyCommand=id",
        "al ice",
        "",
        "a" * 129,
        123,
        None,
        "alice\x1b[2J",
        # What the Match exec line of a Hub with an authority would carry:
        # ssh's %-tokens, its quotes and comments, a shell's quotes.
        "ann%h",
        'ann"x',
        "ann#x",
        "ann'x",
        "ann$(id)",
    ],
)
def test_a_bad_user_name_is_refused_and_nothing_written(user, laptop):
    before = snapshot(laptop)
    with HostileServer() as hub:
        a_hub(hub, {"": server_model("")}, user=user)
        result = config_ssh(hub, laptop)
        assert ("POST", f"/hub/api/users/{USER}/tokens") not in hub.requests
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"jupyter-sshd-proxy: the Hub at {hub.url} sent a user name that is not a safe one"
    )
    assert not CONTROL.search(line)
    assert snapshot(laptop) == before


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:1/",
        "http://127.0.0.1:1/a b/",
        "http://user:pw@127.0.0.1:1/",
        "http://[::1/",
    ],
)
def test_a_bad_url_is_refused_and_nothing_written(url, laptop):
    before = snapshot(laptop)
    result = run_cli(
        "config-ssh", url, "--name", "myhub", "--ssh-config", str(laptop / ".ssh/config"),
        token=TOKEN,
    )  # fmt: skip
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "pw" not in result.stderr
    assert snapshot(laptop) == before


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"scopes": [f"admin:users!user={USER}"]}, "cannot make a token limited to what ssh needs"),
        ({"scopes": None}, "cannot make a token limited to what ssh needs"),
        ({"expires_at": "soon\x1b[2J"}, "sent an expiry time that is not a time"),
        ({"token": "tok en\n"}, "sent a new token that is not one"),
        ({"id": "../../x"}, "sent a token id that is not one"),
    ],
)
def test_a_token_answer_that_is_not_what_was_asked_is_refused(answer, said, laptop):
    before = snapshot(laptop)
    with HostileServer() as hub:
        a_hub(hub, {"": server_model("")})
        body = json.loads(hub.answers[("POST", f"/hub/api/users/{USER}/tokens")].body)
        body.update(answer)
        hub.answers[("POST", f"/hub/api/users/{USER}/tokens")] = Answer.json(body, status=201)
        result = config_ssh(hub, laptop)
        taken_back = ("DELETE", f"/hub/api/users/{USER}/tokens/a9") in hub.requests
    assert result.returncode == 1
    assert said in ours(result.stderr)[-1]
    assert not CONTROL.search(result.stderr.replace("\n", ""))
    assert NEW_TOKEN not in result.stderr
    assert TOKEN not in result.stderr
    assert taken_back == ("id" not in answer and "token" not in answer)
    assert without_keys(snapshot(laptop)) == without_keys(before)


def test_a_hub_that_will_not_make_a_token_is_one_line_and_the_flag_stores_the_pasted(laptop):
    with HostileServer() as hub:
        a_hub(hub, {"": server_model("")})
        hub.answers[("POST", f"/hub/api/users/{USER}/tokens")] = Answer.json(
            {"status": 403, "message": "Forbidden"}, status=403
        )
        refused = config_ssh(hub, laptop)
        assert refused.returncode == 1
        assert ours(refused.stderr)[-1] == (
            f"jupyter-sshd-proxy: the Hub at {hub.url} would not make a token limited to what "
            f"ssh needs (403): the token you gave may not make tokens (it needs the scope "
            f"tokens!user={USER}); use a token from {hub.url}hub/token, or give "
            "--store-pasted-token to store the one you gave as it is"
        )
        assert not (laptop / ".ssh/jupyter-sshd-proxy/myhub.token").exists()
        stored = config_ssh(hub, laptop, "--store-pasted-token")
    assert stored.returncode == 0, stored.stderr
    assert (laptop / ".ssh/jupyter-sshd-proxy/myhub.token").read_text() == TOKEN + "\n"


def test_escape_sequences_in_the_hubs_messages_never_reach_the_terminal(laptop):
    with HostileServer() as hub:
        a_hub(hub, {"": server_model("")})
        hub.answers[("GET", "/hub/api/user")] = Answer.json(
            {"status": 400, "message": "\x1b]0;owned\x07\x1b[2Jbad"}, status=400
        )
        result = config_ssh(hub, laptop)
    assert result.returncode == 1
    assert not CONTROL.search(result.stderr.replace("\n", ""))
    assert "bad" in result.stderr


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ({"pending": "rm -rf"}, "with a pending state we do not know"),
        ({"ready": "yes", "stopped": "no"}, "without a ready or stopped state"),
        ({"last_activity": "yesterday\n"}, "with a last activity that is not a time"),
        ("running", "as something not a JSON object"),
    ],
)
def test_a_server_model_of_the_wrong_shape_is_refused(model, said, laptop):
    before = snapshot(laptop)
    servers = {
        "": server_model(""),
        "gpu": {**server_model("gpu"), **model} if isinstance(model, dict) else model,
    }
    with HostileServer() as hub:
        a_hub(hub, servers)
        result = config_ssh(hub, laptop)
    assert result.returncode == 1
    assert said in result.stderr
    assert snapshot(laptop) == before


def test_a_hostile_servers_host_keys_are_not_pinned_on_first_use(laptop):
    """The KnownHostsCommand of a server made later: its answers are checked as
    config-ssh checks them, and nothing is pinned."""
    with HostileServer() as hub:
        a_hub(hub, {"": server_model("")})
        assert config_ssh(hub, laptop).returncode == 0
        hub.answers[("GET", f"/user/{USER}/later" + HOST_KEYS)] = Answer.json(
            {"keys": [{"type": "@cert-authority *", "key": ED25519}]}
        )
        known = laptop / ".ssh/jupyter-sshd-proxy/known_hosts"
        before = known.read_bytes()
        command = _option(laptop, "myhub.later", "knownhostscommand")
        argv = shlex.split(
            command.replace("%n", "myhub.later")
            .replace("%I", "HOSTNAME")
            .replace("%H", "myhub.later")
        )
        result = subprocess.run(
            argv, capture_output=True, text=True, env=env_with_token(None), timeout=60
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "sent host key 1 that is not a public key of a known type" in result.stderr
    assert known.read_bytes() == before


def _option(laptop: Path, host: str, option: str) -> str:
    out = subprocess.run(
        ["ssh", "-G", "-F", str(laptop / ".ssh/config"), host],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(option + " "))


@pytest.mark.parametrize(
    "typed",
    [
        "myhub.x$(touch {marker})",
        "myhub.x;touch {marker}",
        "myhub.x`touch {marker}`",
        "myhub.x\ntouch {marker}",
    ],
)
def test_a_typed_host_name_runs_nothing_in_the_shell(typed, laptop):
    """The pattern's ProxyCommand gets the name as typed ('%n'). OpenSSH 9.6 and
    newer refuse such names; an older one hands them to $SHELL -c: quoted, the
    name reaches our proxy as one word, which refuses it."""
    marker = laptop / "PWNED"
    typed = typed.format(marker=marker)
    with HostileServer() as hub:
        a_hub(hub, {"": server_model("")})
        assert config_ssh(hub, laptop).returncode == 0
        command = _option(laptop, "myhub.later", "proxycommand")
        assert command.endswith(" '%n'")
        result = subprocess.run(
            ["/bin/sh", "-c", "exec " + command.replace("%n", typed).replace("%%", "%")],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
            env=env_with_token(None),
        )  # fmt: skip
    assert result.returncode == 255
    assert not marker.exists()
    (line,) = result.stderr.splitlines()
    assert re.match(
        r"jupyter-sshd-proxy: '.*' is not myhub or myhub\.SERVER with a server name", line
    )


def test_host_names_with_a_quote_or_backslash_never_match_the_pattern(laptop):
    with HostileServer() as hub:
        a_hub(hub, {"": server_model("")})
        assert config_ssh(hub, laptop).returncode == 0
    config = (laptop / ".ssh" / "config").read_text()
    (pattern,) = [line for line in config.splitlines() if line.startswith("Host myhub.*")]
    assert pattern.endswith(' "!*\'*" "!*\\*"')


def test_a_state_directory_others_may_change_is_refused_for_a_hub_too(laptop):
    """The Hub's form keeps its token, pins and control sockets in the same
    directory as the per-server form, and refuses it on the same terms:
    before the pasted token goes anywhere."""
    own = laptop / ".ssh" / "jupyter-sshd-proxy"
    own.mkdir()
    own.chmod(0o777)
    before = (laptop / ".ssh" / "config").read_bytes()
    with HostileServer() as hub:
        a_hub(hub, {"": server_model("")})
        result = config_ssh(hub, laptop)
    assert (result.returncode, result.stderr) == (
        1,
        f"jupyter-sshd-proxy: the state directory {own} is writable by others (mode 0777): "
        "they could change the pinned host keys and the control sockets; make it yours "
        f"alone with: chmod 700 {own}\n",
    )
    assert [request for request in hub.requests if request[0] != "GET"] == []
    assert (laptop / ".ssh" / "config").read_bytes() == before
    assert list(own.iterdir()) == []
