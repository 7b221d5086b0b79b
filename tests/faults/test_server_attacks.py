"""Attacks on the server side: key lines read otherwise than sshd reads them,
the REST surface, and extra_options.

Each test pins the safe behaviour, so a test that fails shows a break. The
evidence for the key-line tests is sshd itself: the key logs in (or is
refused) through a real server, and the API is asked what it lists.
Docstrings that start "Was broken" describe what the attack found, and what
answers it now.
"""

from __future__ import annotations

import base64
import contextlib
import struct
import subprocess
import urllib.parse

import pytest
from traitlets.config import Config

from jupyter_sshd_proxy.settings import SSHDProxy
from jupyter_sshd_proxy_client.errors import ConfigError
from jupyter_sshd_proxy_client.keys import edits

from ..support.api import call, fingerprint_of
from ..support.helpers import SSHClient, first_answer_line, make_key, pin_host_keys


@contextlib.contextmanager
def keys_file_restored(setup):
    before = setup.authorized_keys.read_bytes()
    try:
        yield
    finally:
        setup.authorized_keys.write_bytes(before)


def _key(tmp_path, name):
    """(private key path, "type base64", fingerprint) of a fresh ed25519 key."""
    key = make_key(tmp_path / name)
    pub = key.with_suffix(".pub")
    return key, " ".join(pub.read_text().split()[:2]), fingerprint_of(pub)


def _logs_in(server, setup, key) -> bool:
    ssh = SSHClient(server, key, setup.known_hosts, proxy="websocat")
    result = ssh.ssh("echo in", identity=key)
    refused = result.returncode == 255
    assert not refused or b"Permission denied" in result.stderr, result.stderr
    return not refused


def _listed(server) -> list[str]:
    status, body = call(server, "GET", "/authorized-keys")
    assert status == 200, body
    return [key["fingerprint"] for key in body["keys"]]


def _delete(server, fingerprint):
    return call(server, "DELETE", "/authorized-keys?fingerprint=" + urllib.parse.quote(fingerprint))


# ------------------------------------------- a key sshd lets in, the API hides

# grammar.NEVER_GRANTED was matched against the line's first word, cut at the first
# space or tab *without* regard to quotes. Its ".*-cert-v01@openssh\.com"
# branch then took any first word that ends so, e.g. 'environment="A=x-cert-v01@openssh.com',
# for a certificate key type: the key reader read the line as "type base64" and skipped
# it. sshd reads it as options (a quoted value with a space in it) and a key.
# Type names are now compared exactly, as sshd's key reader does.
CERT_SUFFIX_TRICKS = {
    "environment": 'environment="A=x-cert-v01@openssh.com y" {key} hidden',
    "command": 'command="echo-cert-v01@openssh.com x",no-pty {key} hidden',
    "from": 'from="*,x-cert-v01@openssh.com *" {key} hidden',
}


@pytest.mark.parametrize("trick", sorted(CERT_SUFFIX_TRICKS))
def test_a_cert_suffix_in_the_first_option_is_read_as_options_and_a_key(tmp_path, trick):
    """Was broken (no server needed): read_keys() listed nothing for a line
    that sshd 9.2 reads as options + key and lets the key in (see the next test)."""
    _, key, fingerprint = _key(tmp_path, trick)
    path = tmp_path / "authorized_keys"
    path.write_text(CERT_SUFFIX_TRICKS[trick].format(key=key) + "\n")
    assert [k.fingerprint for k in edits.read_keys(str(path))] == [fingerprint]


def test_a_key_behind_a_cert_suffixed_option_is_listed_and_removed(server, setup, tmp_path):
    """Was broken (high): a line sshd takes, which GET did not list and DELETE
    could not remove (404): a backdoor that the API and the page never showed."""
    key, pub, fingerprint = _key(tmp_path, "hidden")
    with keys_file_restored(setup):
        line = CERT_SUFFIX_TRICKS["environment"].format(key=pub)
        setup.authorized_keys.write_text(line + "\n")
        assert _logs_in(server, setup, key)  # sshd takes the line
        listed = _listed(server)
        status, _ = _delete(server, fingerprint)
        assert fingerprint in listed, "a key that logs in is not listed"
        assert status == 204, "DELETE cannot remove it either"
        assert not _logs_in(server, setup, key)


def test_delete_204_means_no_line_lets_the_key_in(server, setup, tmp_path):
    """Was broken (high): the key was listed (its plain line) and DELETE answered
    204, but the hidden line stayed and the key still logged in. The user was
    told the key was revoked."""
    key, pub, fingerprint = _key(tmp_path, "revoked")
    with keys_file_restored(setup):
        setup.authorized_keys.write_text(
            f"{pub} laptop\n" + CERT_SUFFIX_TRICKS["command"].format(key=pub) + "\n"
        )
        assert fingerprint in _listed(server)
        assert _delete(server, fingerprint)[0] == 204
        assert not _logs_in(server, setup, key), "DELETE said 204, the key still logs in"


def test_delete_removes_every_variant_line_of_a_key(server, setup, tmp_path):
    """Held: the same key on several lines (plain, with options, as a
    certificate authority, ED25519 short name in the data, \\v in the base64,
    tabs): DELETE removes them all, and the other lines stay byte for byte."""
    key, pub, fingerprint = _key(tmp_path, "variants")
    _, other, _ = _key(tmp_path, "other")
    kind, data = pub.split()
    public = base64.b64decode(data)[-32:]
    short = base64.b64encode(
        struct.pack(">I", 7) + b"ED25519" + struct.pack(">I", 32) + public
    ).decode()
    lines = [
        f"{pub} one\n",
        f'no-pty,command="echo hi" {pub} two\n',
        f"cert-authority {pub} ca\n",
        f"{kind} {short} short-name\n",
        f"{kind}\t{data[:9]}\v{data[9:]}\tvt\n",
    ]
    keep = f"{other} keep\n# a comment\n"
    with keys_file_restored(setup):
        setup.authorized_keys.write_text(keep + "".join(lines))
        assert _listed(server).count(fingerprint) == len(lines)
        assert _logs_in(server, setup, key)
        assert _delete(server, fingerprint)[0] == 204
        assert setup.authorized_keys.read_text() == keep
        assert not _logs_in(server, setup, key)


# ------------------------------ a key the API lists, which sshd never lets in

# Each line: sshd 9.2 skips it (options it refuses when it reads the line) or
# refuses the key whenever it is used, wherever from.
PHANTOM_LINES = {
    # auth_authorise_keyopts(): "principals on non-CA key" -> deny
    "principals-on-a-plain-key": 'principals="{user}" {key}',
    # handle_permit(): permitopen needs host:port ("bare port" is for permitlisten)
    "permitopen-bare-port": 'permitopen="8888" {key}',
    "permitlisten-port-zero": 'permitlisten="[::1]:0" {key}',
    # parse_absolute_time() gives 0: "invalid expires time"
    "expiry-time-epoch": 'expiry-time="19700101Z" {key}',
    "expiry-time-not-a-date": 'expiry-time="abcdefgh" {key}',
    # a2tun() fails: "invalid tun device"
    "tunnel-not-a-number": 'tunnel="x" {key}',
    # more than SSH_AUTHOPT_ENV_MAX (1024) different names: "too many environment strings"
    "1026-environment-names": "{env1026} {key}",
    # more than SSH_AUTHOPT_PERMIT_MAX (4096): "too many permission directives"
    "4098-permitopen": "{permit4098} {key}",
    "tunnel-too-large": 'tunnel="2147483646" {key}',
    "permitopen-bad-bracket": 'permitopen="[::1]x:22" {key}',
}


@pytest.mark.parametrize("trick", sorted(PHANTOM_LINES))
def test_a_line_sshd_refuses_lists_nothing_and_a_post_adds_the_key(server, setup, tmp_path, trick):
    """Was broken (low): GET listed a key sshd refuses ("a line sshd skips lists
    nothing", docs/rest-api.md), and POSTing the plain key was refused with 409 "already
    authorized", so through the API the user could not authorize a key that
    does not work (they had first to DELETE a line they may not know is broken)."""
    key, pub, fingerprint = _key(tmp_path, trick)
    env1026 = ",".join(f'environment="V{n}=1"' for n in range(1026))
    permit4098 = ",".join(f'permitopen="h:{n + 1}"' for n in range(4098))
    line = PHANTOM_LINES[trick].format(
        key=pub, user=setup.account.name, env1026=env1026, permit4098=permit4098
    )
    with keys_file_restored(setup):
        setup.authorized_keys.write_text(line + "\n")
        assert not _logs_in(server, setup, key)  # sshd refuses it
        listed = _listed(server)
        status, body = call(server, "POST", "/authorized-keys", {"key": pub + " again"})
        assert fingerprint not in listed, f"listed although sshd refuses: {line[:80]}"
        assert status == 201, body


USELESS_OPTIONS = {
    'principals="{user}"': "principals= is for cert-authority lines; sshd refuses a plain "
    "key with it",
    'expiry-time="19700101Z"': "expiry-time='19700101Z' is not after 1970-01-01 00:00:00 "
    "UTC; sshd skips a line with such options",
    'expiry-time="20000101Z"': "the key expired at 2000-01-01 00:00:00 UTC (expiry-time); "
    "sshd refuses it",
    'permitopen="8888"': "permitopen='8888' is not host:port; sshd skips a line with such options",
}


@pytest.mark.parametrize("options", sorted(USELESS_OPTIONS))
def test_post_refuses_options_that_make_the_key_useless(server, setup, tmp_path, options):
    """Was broken (low): POST with allow_options answered 201 (the key is
    "authorized") for options sshd refuses whenever the key is used. Now: 400
    with one line saying why, and nothing is written."""
    key, pub, _ = _key(tmp_path, "post-phantom")
    line = options.format(user=setup.account.name) + " " + pub
    with keys_file_restored(setup):
        before = setup.authorized_keys.read_bytes()
        status, body = call(
            server, "POST", "/authorized-keys", {"key": line, "allow_options": True}
        )
        assert (status, body["message"]) == (400, USELESS_OPTIONS[options])
        assert setup.authorized_keys.read_bytes() == before
        assert not _logs_in(server, setup, key)


# ------------------------------------------------------------ the REST surface


def _raw(server, request: bytes) -> bytes:
    return first_answer_line(server.port, request)


@pytest.mark.parametrize("length", ["abc", "2, 2"])
@pytest.mark.parametrize(
    ("method", "token"), [("GET", False), ("GET", True), ("POST", True), ("DELETE", True)]
)
def test_a_bad_content_length_is_a_400_not_a_500(server, method, token, length):
    """Was broken (low): AuthorizedKeysHandler.prepare() ran int() on the
    Content-Length header before tornado has checked it (stream_request_body
    calls prepare first): ValueError, 500 and a traceback in the server log,
    for any client, a GET even without a token ("Bad input is always a 4xx").
    Now it must be digits only, or the answer is 400."""
    auth = f"Authorization: token {server.token}\r\n" if token else ""
    request = (
        f"{method} /sshd-proxy/api/authorized-keys HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n{auth}"
        f"Content-Length: {length}\r\n"
        "Connection: close\r\n\r\n{}"
    ).encode()
    status = int(_raw(server, request).split(b" ", 2)[1])
    assert status == 400, status


# ---------------------------------------------------------------- extra_options


@pytest.mark.parametrize("patterns", ["*", "BASH_ENV", "LD_*", "B*", "LANG PATH", "LC_?", "ENV"])
def test_accept_env_that_could_reach_a_dangerous_variable_is_refused(patterns):
    """Was broken (config-dependent, medium): extra_options accepted "AcceptEnv *"
    (or AcceptEnv BASH_ENV / LD_PRELOAD). With it, a key limited by
    restrict,command="..." (or a ForceCommand from extra_options) ran any
    command: the client sent BASH_ENV='$(cmd)' and the user's bash, run
    non-interactively for the forced command, expanded it. Now AcceptEnv may
    name only LANG, LC_*, LC_<NAME>, TZ and COLORTERM; anything else is one line."""
    with pytest.raises(ConfigError) as error:
        SSHDProxy(config=Config({"SSHDProxy": {"extra_options": [f"AcceptEnv {patterns}"]}}))
    message = str(error.value)
    assert message.startswith("SSHDProxy.extra_options: AcceptEnv ")
    assert "AcceptEnv may name only LANG, LC_*, LC_<NAME>, TZ and COLORTERM" in message
    assert "\n" not in message


def test_a_restricted_key_cannot_escape_its_command_through_accept_env(tmp_path):
    """The AcceptEnv that is allowed does not open the escape: shown with this
    package's own rendered sshd_config and a real sshd in inetd mode, the
    client's SetEnv=BASH_ENV=... is dropped and only the forced command runs."""
    from jupyter_sshd_proxy import sshd

    from ..support.servers import real_config

    allowed = "AcceptEnv LANG LC_* LC_ALL TZ COLORTERM"
    options = SSHDProxy(config=Config({"SSHDProxy": {"extra_options": [allowed]}}))
    assert options.extra_options == [allowed]
    sshd_path, config = real_config(tmp_path, extra_options=options.extra_options)
    user = sshd.current_user()
    if not user.pw_shell.endswith("bash"):
        pytest.skip("the user's shell is not bash")
    key, pub, _ = _key(tmp_path, "restricted")
    keys_file = tmp_path / "authorized_keys"
    keys_file.write_text(f'restrict,command="echo only-this" {pub}\n')
    keys_file.chmod(0o600)
    text = config.read_text().replace("StrictModes yes", "StrictModes no")
    config.write_text(text)
    known_hosts = tmp_path / "known_hosts"
    pin_host_keys(known_hosts, "x", tmp_path / "keys")  # the host keys real_config made
    marker = tmp_path / "escaped"
    result = subprocess.run(
        ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "-i", str(key), "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "LogLevel=ERROR",
         "-o", f'SetEnv=BASH_ENV="$(touch {marker})" LC_ALL=C',
         "-o", f"ProxyCommand={sshd_path} -i -f {config}",
         f"{user.pw_name}@x", "ignored"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.stdout == b"only-this\n", result.stderr
    assert not marker.exists(), "the forced command was escaped through AcceptEnv"


# ------------------------------------------- configuration-dependent key files


def test_every_keys_file_is_listed_and_edited(setup, tmp_path):
    """Was broken (configuration-dependent, low; the listing half is known from
    test_page_attacks.py): with two authorized_keys_files, DELETE edited only
    the first and answered 204, while the same key in the second still logged
    in, and GET listed the first only. Now GET lists the keys of every file
    (each with its file), POST adds to the first unless a file already lets
    the key in, and DELETE removes the key from every file."""

    key, pub, fingerprint = _key(tmp_path, "two-files")
    _, other_pub, other_fingerprint = _key(tmp_path, "only-second")
    _, new_pub, new_fingerprint = _key(tmp_path, "new")
    first = setup.base / "attack_server_keys_first"
    second = setup.base / "attack_server_keys_second"
    first.write_text(f"{pub} in-first\n")
    second.write_text(f"{pub} in-second\n{other_pub} only-second\n")
    for path in (first, second):
        path.chmod(0o600)
        setup.account.own(path)
    with setup.running(JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES=f"{first}:{second}") as other:
        status, body = call(other, "GET", "/authorized-keys")
        assert status == 200, body
        assert (body["file"], body["files"]) == (str(first), [str(first), str(second)])
        assert [(k["fingerprint"], k["file"]) for k in body["keys"]] == [
            (fingerprint, str(first)),
            (fingerprint, str(second)),
            (other_fingerprint, str(second)),
        ]
        status, body = call(other, "POST", "/authorized-keys", {"key": other_pub + " again"})
        assert (status, body["message"]) == (
            409,
            f"the key {other_fingerprint} is already authorized, in {second}",
        )
        assert call(other, "POST", "/authorized-keys", {"key": new_pub + " new"})[0] == 201
        assert first.read_text().endswith(f"{new_pub} new\n")
        assert new_fingerprint not in second.read_text()
        assert _logs_in(other, setup, key)
        assert _delete(other, fingerprint)[0] == 204
        assert not _logs_in(other, setup, key), "DELETE said 204, the key still logs in"
        assert first.read_text() == f"{new_pub} new\n"
        assert second.read_text() == f"{other_pub} only-second\n"
        assert _delete(other, fingerprint)[0] == 404
        first.unlink()
        second.unlink()


@pytest.mark.parametrize("name", ['authorized_keys"2"', "authorized_keys'2'", "authorized\\keys"])
def test_a_keys_path_sshd_would_read_as_another_file_is_refused(monkeypatch, tmp_path, name):
    """Was broken (configuration-dependent, low): authorized_keys_files could hold
    quotes (and backslashes), and render_sshd_config() writes AuthorizedKeysFile
    unquoted (HostKey is quoted). sshd removes the quotes (argv_split), so it
    read .../authorized_keys2 while the API listed and edited
    .../authorized_keys"2". Now such a path is refused, with one line, from
    the config and from the variable alike."""
    path = str(tmp_path / name)
    with pytest.raises(ConfigError) as error:
        SSHDProxy(config=Config({"SSHDProxy": {"authorized_keys_files": [path]}}))
    assert str(error.value).startswith(f"SSHDProxy.authorized_keys_files: {path!r} contains ")
    assert str(error.value).endswith("which sshd_config reads as quoting, so sshd would read "
                                     "another file; rename it")  # fmt: skip
    monkeypatch.setenv("JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES", path)
    with pytest.raises(ConfigError) as error:
        SSHDProxy()
    assert str(error.value).startswith(f"JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES: {path!r}")


@pytest.mark.parametrize("name", ["authorized_keys#2", "keys,2", "keys=2", "keys$HOME"])
def test_a_keys_path_that_is_allowed_is_the_file_sshd_reads(tmp_path, name):
    """The characters a path may still hold reach sshd as the same file."""
    from jupyter_sshd_proxy import server, sshd

    from ..support.servers import real_config

    path = str(tmp_path / name)
    settings = SSHDProxy(config=Config({"SSHDProxy": {"authorized_keys_files": [path]}}))
    edited = server.authorized_keys_files(settings, sshd.current_user())[0]
    sshd_path, config = real_config(tmp_path)
    rendered = sshd.render_sshd_config(
        port=2222,
        host_keys=[line.split('"')[1] for line in config.read_text().splitlines()
                   if line.startswith("HostKey ")],
        authorized_keys_files=[edited],
        user=sshd.current_user(),
        log_level="INFO",
        version=sshd.sshd_version(sshd_path),
    )  # fmt: skip
    config.write_text(rendered)
    output = subprocess.run(
        [sshd_path, "-T", "-f", str(config)], capture_output=True, text=True, check=True
    ).stdout
    read = [line.split(" ", 1)[1] for line in output.splitlines()
            if line.startswith("authorizedkeysfile ")]  # fmt: skip
    assert read == [edited]
