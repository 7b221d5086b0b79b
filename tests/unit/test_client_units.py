"""The pure parts of the laptop side, in seconds: no sshd, no Jupyter server.

The Host block is also read back by the real ssh (`ssh -G` prints the
configuration it would use, without connecting): quoting and %-escaping are
right when OpenSSH says so, not when they look right.
"""

from __future__ import annotations

import pytest

from jupyter_sshd_proxy_client import ssh_files, tls, untrusted, urls
from jupyter_sshd_proxy_client.config_ssh import _encode, _read
from jupyter_sshd_proxy_client.errors import BadURLError, HubError, TLSError, UntrustedAnswer
from jupyter_sshd_proxy_client.hub_start import hub_api
from jupyter_sshd_proxy_client.urls import server_url, websocket_url

from ..support.ssh_blocks import BASE, block

ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAID/djou8gwoY/VQFm0ljQSQHmyxaUBmIdgVqapDMgm+f"


# untrusted: what the server sends


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain words", "plain words"),
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
        ("\x1b]0;title\x07rest", "]0;titlerest"),
        ("C1 \x9b2J csi", "C1 2J csi"),
        ("one\r\ntwo\nthree\tfour", "one two three four"),
        ("right-to-left \u202eevil\u202c", "right-to-left evil"),
        ("  \n spaces around \n ", "spaces around"),
        (None, "None"),
        ("x" * 600, "x" * 497 + "..."),
    ],
)
def test_printable(text, shown):
    assert untrusted.printable(text) == shown


@pytest.mark.parametrize(("command", "status"), [("doctor", 1), ("proxy", 255)])
def test_an_unexpected_error_is_one_line_without_the_token(command, status, monkeypatch, capsys):
    """cli.main's last guard: a bug is still one line, never a traceback or the token."""
    from jupyter_sshd_proxy_client import cli

    monkeypatch.setattr(untrusted, "_SECRETS", {"tok-secret-1"})

    def broken(args):
        raise RuntimeError("tok-secret-1\x1b[2J")

    monkeypatch.setattr(cli, "_run", broken)
    assert cli.main([command, "http://127.0.0.1:1/"]) == status
    assert capsys.readouterr().err == (
        "jupyter-sshd-proxy: RuntimeError: <token>[2J; this is a bug in jupyter-sshd-proxy; "
        "please report it\n"
    )


def test_importing_untrusted_compiles_no_pattern():
    """The ProxyCommand imports untrusted on every connection and, when it
    connects, uses none of its patterns: compiling them took 0.6 ms."""
    import subprocess
    import sys

    code = (
        "import re\n"
        "compiled = []\n"
        "real = re.compile\n"
        "re.compile = lambda *args, **kwargs: compiled.append(args) or real(*args, **kwargs)\n"
        "import jupyter_sshd_proxy_client.untrusted\n"
        "print(compiled)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "[]\n", result.stderr
    assert untrusted.printable("a\x1b[2J\u2028b") == "a[2J b"
    assert untrusted.USER_NAME.fullmatch("jovyan")
    assert not untrusted.USER_NAME.fullmatch("-jovyan")


def test_a_registered_secret_is_never_printed(monkeypatch):
    monkeypatch.setattr(untrusted, "_SECRETS", set())
    assert untrusted.secret("s3cr3t-t0ken") == "s3cr3t-t0ken"
    assert untrusted.printable("Authorization: token s3cr3t-\x1bt0ken!") == (
        "Authorization: token <token>!"
    )
    assert untrusted.shown({"echo": "s3cr3t-t0ken"}) == "{'echo': '<token>'}"


@pytest.mark.parametrize("user", ["jovyan", "alice.b", "a_b-c", "_x", "1000", "x" * 32])
def test_good_user_names(user):
    assert untrusted.user_name({"user": user}, BASE) == user


@pytest.mark.parametrize(
    "user",
    ["", "-oProxyCommand", "jo vyan", "a\nb", "a%d", "al@ce", "x" * 33, "ä", None, 1000, []],
)
def test_bad_user_names(user):
    with pytest.raises(UntrustedAnswer) as refused:
        untrusted.user_name({"user": user}, BASE)
    assert str(refused.value) == (
        f"{BASE} sent a user name that is not a portable one (letters, digits, '.', '_' and "
        f"'-', at most 32 characters): {untrusted.shown(user)}; is that URL really your "
        "Jupyter server?"
    )


def test_good_host_keys():
    answer = {"keys": [{"type": "ssh-ed25519", "key": ED25519, "fingerprint": "x"}]}
    assert untrusted.host_keys(answer, BASE) == [("ssh-ed25519", ED25519)]


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "@revoked ssh-ed25519", "key": ED25519},
        {"type": "ssh-ed25519", "key": ED25519 + " comment"},
        {"type": "ssh-ed25519", "key": ED25519 + "\nmore"},
        {"type": "ssh-ed25519 " + ED25519, "key": ""},
        {"type": "ssh-rsa", "key": ED25519},
        {"type": "ssh-ed25519"},
        {"type": 1, "key": ED25519},
    ],
)
def test_bad_host_keys(entry):
    with pytest.raises(UntrustedAnswer) as refused:
        untrusted.host_keys({"keys": [entry]}, BASE)
    assert str(refused.value).startswith(
        f"{BASE} sent host key 1 that is not a public key of a known type: "
    )


def test_no_host_keys():
    with pytest.raises(UntrustedAnswer) as refused:
        untrusted.host_keys({"keys": []}, BASE)
    assert str(refused.value) == f"{BASE} has no host keys to pin; see the Jupyter server's log"


@pytest.mark.parametrize("keys", [None, "ssh-ed25519 AAAA", {"a": 1}, [1], [[]]])
def test_key_lists_of_the_wrong_shape(keys):
    with pytest.raises(UntrustedAnswer) as refused:
        untrusted.key_list({"keys": keys}, BASE, "authorized-keys")
    assert str(refused.value).startswith(
        f"{BASE} sent an authorized-keys answer without a list of at most 1000 JSON objects "
        'as "keys": '
    )


# urls and the Hub's API


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("https://hub.example.org/user/alice", BASE),
        ("https://hub.example.org/user/alice/sshd/", BASE),
        ("wss://hub.example.org/user/alice/sshd/?x=1#y", BASE),
        ("http://127.0.0.1:8888", "http://127.0.0.1:8888/"),
        (
            "https://hub.example.org/user/alice%2Btest/",
            "https://hub.example.org/user/alice%2Btest/",
        ),
        # Percent-encoded as the browser does: no shell reads anything in it.
        ("https://hub.example.org/user/jörg/", "https://hub.example.org/user/j%C3%B6rg/"),
        (
            "https://h.org/a'b\"c\\d$(e)`f`;g!*[h]{i}<j>|k&l",
            "https://h.org/a%27b%22c%5Cd%24%28e%29%60f%60%3Bg%21%2A%5Bh%5D%7Bi%7D%3Cj%3E%7Ck%26l/",
        ),
        ("https://h.org/a-._~/%:@+=,b/", "https://h.org/a-._~/%:@+=,b/"),
        ("HTTPS://Hub.Example.ORG:8443/", "https://hub.example.org:8443/"),
        ("https://bücher.example/", "https://xn--bcher-kva.example/"),
        ("http://[::1]:8888/", "http://[::1]:8888/"),
    ],
)
def test_server_url(given, base):
    assert server_url(given) == base
    assert websocket_url(given) == "ws" + base[4:] + "sshd/"


@pytest.mark.parametrize(
    "given",
    [
        "hub.example.org/user/alice/",
        "ftp://hub/",
        "https://",
        "https://hub/a b/",
        "https://[::1/",
        "https://h:0/",
        "https://h:65536/",
        "https://h:x/",
        "https://-h/",
        "https://h$(id)/",
        "https://h'x/",
        "https://[fe80::1%25eth0]/",
        "https://h..org/",
    ],
)
def test_not_a_server_url(given):
    with pytest.raises(BadURLError):
        server_url(given)


@pytest.mark.parametrize(
    "host",
    [
        "Hub.Example.ORG", "hub.example.org.", "a..b", ".a", "a" * 63 + ".b", "a" * 64 + ".b",
        "b." + "a" * 64, "xn--bcher-kva.example", "h_1-2", "127.0.0.1", "-a.b",
    ],
)  # fmt: skip
def test_an_ascii_host_is_taken_as_the_idna_codec_takes_it(host):
    """server_url() skips the IDNA codec for an ASCII name (no import on
    every connection): what it accepts, and how it spells it, stay the same."""
    try:
        encoded = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        encoded = ""
    if encoded and urls._HOST_NAME.fullmatch(encoded):
        assert server_url(f"https://{host}/") == f"https://{encoded}/"
    else:
        with pytest.raises(BadURLError):
            server_url(f"https://{host}/")


def test_a_user_name_or_password_in_the_url_is_refused_and_not_repeated():
    with pytest.raises(BadURLError) as refused:
        server_url("https://alice:hunter2@hub.example.org/user/alice/")
    assert str(refused.value) == (
        "the URL 'https://hub.example.org/user/alice/' has a user name or password in it "
        "(user:password@...); leave it out: the token is all the server needs"
    )


def test_a_url_with_a_control_character_is_refused():
    with pytest.raises(BadURLError) as refused:
        server_url("https://hub.example.org/user/alice/\x1b[2J")
    assert str(refused.value) == (
        "'https://hub.example.org/user/alice/\\x1b[2J' is not a server URL: it has white "
        "space or control characters in it; give one like https://hub.example.org/user/NAME/"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (BASE, ("https://hub.example.org/hub/api/", "alice", "users/alice/server")),
        (
            "https://h.org/prefix/user/bob/gpu/sshd/",
            ("https://h.org/prefix/hub/api/", "bob", "users/bob/servers/gpu"),
        ),
    ],
)
def test_hub_api(url, expected):
    assert hub_api(url) == expected


def test_hub_api_needs_a_user_url():
    with pytest.raises(HubError) as refused:
        hub_api("http://127.0.0.1:8888/")
    assert str(refused.value) == (
        "http://127.0.0.1:8888/ is not a JupyterHub user server URL (.../user/NAME/): "
        "--start needs one"
    )


# ssh_files: the Host block and known_hosts


def test_the_block():
    assert block() == (
        "# >>> jupyter-sshd-proxy myhub >>>\n"
        "# Written by `jupyter-sshd-proxy config-ssh`; run it again to update this block.\n"
        "Host myhub\n"
        "    User jovyan\n"
        "    HostKeyAlias myhub\n"
        "    UserKnownHostsFile /home/me/.ssh/jupyter-sshd-proxy/known_hosts\n"
        "    StrictHostKeyChecking yes\n"
        "    IdentityFile /home/me/.ssh/id_ed25519\n"
        "    IdentitiesOnly yes\n"
        "    ForwardAgent no\n"
        "    ControlMaster auto\n"
        "    ControlPath /home/me/.ssh/jupyter-sshd-proxy/cm-%C\n"
        "    ControlPersist 10m\n"
        "    ProxyCommand /usr/bin/python3 -m jupyter_sshd_proxy_client proxy --token-file "
        "/home/me/.ssh/jupyter-sshd-proxy/myhub.token https://hub.example.org/user/alice/\n"
        "Host *\n"
        "# <<< jupyter-sshd-proxy myhub <<<\n"
    )
    assert "Control" not in block(sharing=False)


@pytest.mark.parametrize("home", ["/home/a\nProxyCommand x", '/home/"me"', "/home/\x1b[2J"])
def test_paths_ssh_config_cannot_hold_are_refused(home):
    with pytest.raises(ValueError, match=r"has a control character or a double quote in it"):
        block(home)


def test_a_dollar_brace_in_a_path_is_refused():
    with pytest.raises(ValueError, match=r"has '\$\{' in it, which ssh would read as an envir"):
        block("/home/${USER}")


def test_a_backslash_in_a_proxycommand_word_is_refused():
    with pytest.raises(ValueError, match=r"has a backslash in it, which shells quote differently"):
        block("/home/a\\b")


def test_a_control_character_anywhere_in_the_block_is_refused():
    with pytest.raises(ValueError, match=r"^the Host block would have a control character"):
        block(url="https://h.org/\nHost *")


def test_sharing_fits_a_unix_socket_address():
    # 104 bytes with the NUL: directory + "/cm-" + 40 + 17 + 1
    assert ssh_files.sharing_fits("/" + "d" * 41)
    assert not ssh_files.sharing_fits("/" + "d" * 42)


def test_host_name_and_check_name():
    assert ssh_files.host_name(BASE) == "hub.example.org-alice"
    assert ssh_files.host_name("http://127.0.0.1:8888/user/a%2Bb/") == "127.0.0.1-8888-a-2Bb"
    # A named server is a server of its own.
    assert ssh_files.host_name(BASE + "gpu/") == "hub.example.org-alice-gpu"
    assert ssh_files.host_name("https://h.org/pre/user/bob/x/") == "h.org-bob-x"
    assert ssh_files.host_name("http://[::1]:8888/") == "1--8888"
    assert ssh_files.check_name("my.hub_1-x") == "my.hub_1-x"
    for bad in ["-x", "a b", "a%b", "*", "a\nb", ""]:
        with pytest.raises(ValueError, match="must be letters, digits"):
            ssh_files.check_name(bad)


CONFIG = "# mine\x0cwith a form feed\nHost work\r\n    User me"


def test_put_block_puts_a_new_block_on_top_then_replaces_it_in_place():
    first = ssh_files.put_block(CONFIG, "myhub", block())
    assert first == block() + "\n" + CONFIG
    again = ssh_files.put_block("Host before\n" + first, "myhub", block(sharing=False))
    assert again == "Host before\n" + block(sharing=False) + "\n" + CONFIG
    assert ssh_files.put_block("", "myhub", block()) == block()


def test_block_url_and_block_settings():
    config = ssh_files.put_block(CONFIG, "myhub", block(url="https://h.org/user/a%2Bb/"))
    assert ssh_files.block_url(config, "myhub") == "https://h.org/user/a%2Bb/"
    assert ssh_files.block_url(config, "other") is None
    settings = ssh_files.block_settings(block(home="/home/o'brien #1"))
    assert settings["userknownhostsfile"] == "/home/o'brien #1/.ssh/jupyter-sshd-proxy/known_hosts"
    assert settings["stricthostkeychecking"] == "yes"
    assert settings["forwardagent"] == "no"
    assert "host" not in settings


def test_put_block_refuses_a_damaged_block():
    with pytest.raises(ValueError, match="block for myhub is damaged"):
        ssh_files.put_block(CONFIG + "\n# >>> jupyter-sshd-proxy myhub >>>\n", "myhub", block())


def test_a_config_that_is_not_utf8_survives_byte_for_byte(tmp_path):
    config = tmp_path / "config"
    config.write_bytes(b"# caf\xe9 in latin-1\nHost x\n")
    text = _read(str(config))
    assert _encode(ssh_files.put_block(text, "myhub", block())).endswith(config.read_bytes())


KNOWN_HOSTS = (
    "myhub ssh-rsa OLD\n"
    "@cert-authority myhub ssh-ed25519 KEPT\n"
    "myhub,other ssh-ed25519 KEPT\n"
    "other ssh-ed25519 KEPT\r\n"
    "junk\x0cmyhub ssh-ed25519 KEPT"
)


def test_put_known_hosts_replaces_only_its_own_lines():
    assert ssh_files.put_known_hosts(KNOWN_HOSTS, "myhub", [("ssh-ed25519", ED25519)]) == (
        KNOWN_HOSTS[len("myhub ssh-rsa OLD\n") :] + f"\nmyhub ssh-ed25519 {ED25519}\n"
    )


@pytest.mark.parametrize(
    "key",
    [("@cert-authority", ED25519), ("ssh-ed25519", ED25519 + " *"), ("ssh-ed25519", "a\nb")],
)
def test_put_known_hosts_writes_nothing_but_alias_type_base64(key):
    with pytest.raises(ValueError, match="it is not ALIAS TYPE BASE64"):
        ssh_files.put_known_hosts("", "myhub", [key])


# tls


def test_a_missing_ca_file_is_one_line(tmp_path):
    with pytest.raises(TLSError) as refused:
        tls.context(str(tmp_path / "nope.pem"))
    assert str(refused.value) == (
        f"cannot load the CA certificate from {tmp_path / 'nope.pem'}: No such file or "
        "directory; give --ca-file a PEM file with the certificate of the CA that signed the "
        "Hub's certificate"
    )


def test_no_ca_file_means_the_default_context():
    assert tls.context(None) is None


def test_the_block_refuses_a_user_name_that_is_not_portable():
    with pytest.raises(ValueError, match="refusing to write the user name 'jo vyan'"):
        ssh_files.render_block(
            name="myhub", user="jo vyan", proxy_argv=["x"], identity_file="/i", known_hosts="/k"
        )
