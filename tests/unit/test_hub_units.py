"""The pure parts of a Hub's block, in seconds: names, durations, the block as ssh reads it.

The block is read back by the real ssh (`ssh -G`): which stanza a host name
falls in, and what its ProxyCommand and KnownHostsCommand are, is what
OpenSSH says.
"""

from __future__ import annotations

import subprocess

import pytest

from jupyter_sshd_proxy_client import hub, hub_urls, ssh_files
from jupyter_sshd_proxy_client.errors import BadURLError, HubError

from ..support.helpers import VENV_BIN, free_port


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://hub.example.org", "https://hub.example.org/"),
        ("https://hub.example.org/hub/", "https://hub.example.org/"),
        ("https://hub.example.org/hub/home", "https://hub.example.org/"),
        ("https://example.org/jupyter/hub/token", "https://example.org/jupyter/"),
        ("HTTPS://Hub.Example.org:8443/", "https://hub.example.org:8443/"),
    ],
)
def test_hub_url(url, base):
    assert hub_urls.hub_url(url) == base


def test_a_servers_url_is_not_a_hubs():
    with pytest.raises(BadURLError, match="is a server's URL, not the Hub's"):
        hub_urls.hub_url("https://hub.example.org/user/alice/")


@pytest.mark.parametrize(
    ("host", "server"), [("myhub", ""), ("myhub.gpu", "gpu"), ("myhub.a_b-9", "a_b-9")]
)
def test_server_of_host(host, server):
    assert hub_urls.server_of_host("myhub", host) == server


@pytest.mark.parametrize(
    "host", ["other", "myhub.", "myhub.a.b", "myhub.a b", "myhub.$(id)", "myhubx", "myhub.-x"]
)
def test_a_host_name_that_is_not_a_server_is_refused(host):
    with pytest.raises(HubError, match=r"is not myhub or myhub\.SERVER"):
        hub_urls.server_of_host("myhub", host)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 2592000), ("12h", 43200), ("90m", 5400), ("45", 45), ("8s", 8)]
)
def test_parse_duration(text, seconds):
    assert hub.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0d", "1y", "-5", "5 days", "1e9"])
def test_a_bad_duration_is_refused(text):
    with pytest.raises(ValueError, match=r"duration|must live"):
        hub.parse_duration(text)


def test_expiry():
    assert hub.expiry_text("2026-01-03T18:34:24.641372Z") == "2026-01-03 18:34 UTC"
    assert hub.expiry_text("soon") is None
    assert hub.expired("2000-01-01T00:00:00Z")
    assert not hub.expired("2999-01-01T00:00:00.000000Z")
    assert not hub.expired(None)


def test_ssh_scopes():
    assert hub.ssh_scopes("alice", start=False) == [
        "access:servers!user=alice",
        "read:servers!user=alice",
    ]
    assert hub.ssh_scopes("alice", start=True)[-1] == "start:servers!user=alice"


def test_info_path():
    assert hub.info_path("/h/.ssh/jupyter-sshd-proxy/myhub.token") == (
        "/h/.ssh/jupyter-sshd-proxy/myhub.hub.json"
    )


@pytest.mark.parametrize("path", ['/a"b', "/a'b", "/a\\b", "/a${HOME}", "/a\nb"])
def test_what_a_known_hosts_command_cannot_hold_is_refused(path):
    with pytest.raises(ValueError, match="KnownHostsCommand"):
        ssh_files._argv_split_line(["python3", path], "the KnownHostsCommand")


def test_the_hub_proxycommand_asks_and_imports_nothing_of_the_hub_until_it_fails():
    """`ssh NAME.SERVER` runs the Hub block's ProxyCommand on every connection:
    the server's URL comes from hub_urls.py, and hub.py / rest.py (urllib.request,
    http.client, email: a tenth of the start-up) load only when the Hub is asked
    why a connection failed. A refused connection is not such a failure."""
    code = (
        "import os, sys\n"
        "from jupyter_sshd_proxy_client import cli\n"
        "os.environ['JUPYTER_SSHD_PROXY_TOKEN'] = 't' * 32\n"
        f"status = cli.main(['proxy', '--user', 'alice', '--name', 'hub', "
        f"'http://127.0.0.1:{free_port()}/', 'hub.gpu'])\n"
        "unwanted = {'http.client', 'email', 'jupyter_sshd_proxy_client.hub',"
        " 'jupyter_sshd_proxy_client.rest', 'jupyter_server', 'tornado'}\n"
        "loaded = unwanted & set(sys.modules)\n"
        "real = 'getproxies' in vars(sys.modules.get('urllib.request', sys))\n"
        "print(status, sorted(loaded), real)\n"
    )
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    assert result.stdout == "255 [] False\n", result.stderr
    assert result.stderr.startswith("jupyter-sshd-proxy: cannot connect to ws://127.0.0.1:"), (
        result.stderr
    )
    assert result.stderr.endswith("/user/alice/gpu/sshd/: Connection refused\n")
