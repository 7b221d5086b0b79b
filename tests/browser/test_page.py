"""The page at <base_url>sshd-proxy/, in a real headless chromium, against a real
Jupyter server (and, as root, a real JupyterHub), with real ssh."""

from __future__ import annotations

import html
import http.client
import json
import os
import shutil
import subprocess
import threading
import urllib.parse
from http.server import ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from jupyter_sshd_proxy.page import hub_info
from jupyter_sshd_proxy_client.ssh_files import host_name

from ..support.helpers import (
    REPO,
    Account,
    SSHClient,
    free_port,
    knock,
    make_key,
    pin_host_keys,
)
from ..support.hub import Hub, HubUserServer, home_is_ready
from ..support.pages import (
    API,
    PAGE,
    TITLE,
    AttackerPage,
    PrefixedServer,
    api_call,
    fingerprint,
    key_item,
    loaded,
    open_with_cookie_login,
    open_with_token,
)

# JUPYTER_SSHD_PROXY_SCREENSHOT=1 makes the real-Hub test write docs/users.md's
# screenshot (a plain test run leaves the checkout as it was).
SCREENSHOT = REPO / "docs" / "page.png"


@pytest.fixture(scope="module")
def ssh_client(server, setup, client_key):
    return SSHClient(server, client_key, setup.known_hosts, proxy="jupyter-sshd-proxy")


# ---------------------------------------------------------------- the page itself


def test_page_shows_the_command_host_keys_keys_and_status(server, setup, client_key, context):
    page = open_with_token(context, server)
    # The token left the address bar (history, screenshots), as JupyterLab does.
    assert page.url == f"{server.url}{PAGE}"
    expect(page.locator("h1")).to_have_text(TITLE)
    name = host_name(f"{server.url}/")
    assert name == f"127.0.0.1-{server.port}"
    expect(page.locator("#install-line")).to_have_text("pipx install jupyter-sshd-proxy-client")
    expect(page.locator("#command")).to_have_text(
        f"jupyter-sshd-proxy config-ssh {server.url}/ --name {name}"
    )
    expect(page.locator("#ssh-line")).to_have_text(f"ssh {name}")
    expect(page.locator("#token-help")).to_have_text(
        "Get this server's token: on the server, jupyter server list shows it."
    )
    expect(page.locator("#token-page")).to_have_count(0)
    expect(page.locator("#vscode-help")).to_have_text(
        "With the Remote - SSH extension, after config-ssh above: run Remote-SSH: Connect "
        f"to Host... from the Command Palette and pick {name}."
    )
    host_keys = sorted(setup.host_key_dir.glob("ssh_host_*_key.pub"))
    expect(page.locator("#host-keys li")).to_have_text(
        [f"ED25519 {fingerprint(host_keys[0])}", f"RSA {fingerprint(host_keys[1])}"]
    )
    # The account's own server reads sshd's default files, authorized_keys2 too.
    files = [setup.authorized_keys]
    if not setup.account.is_current:
        files.append(setup.authorized_keys.with_name("authorized_keys2"))
    expect(page.locator("#keys-file")).to_have_text(
        f"These keys may log in, from {' and '.join(map(str, files))}:"
    )
    ours = key_item(page, fingerprint(client_key.with_suffix(".pub")))
    expect(ours.locator(".comment")).to_have_text("test")
    expect(ours.get_by_role("button", name="Remove the key test (")).to_be_visible()
    status = server.status()
    expect(page.locator("#status-state")).to_have_text(f"running (pid {status['pid']})")
    expect(page.locator("#status-version")).to_have_text(status["version"])
    expect(page.locator("#status-sessions")).to_have_text(str(status["sessions"]))
    expect(page.locator("#status-user")).to_have_text(setup.account.name)
    expect(page.locator("#status-error")).to_have_text("none")


def test_copy_puts_the_command_on_the_clipboard(server, context):
    page = open_with_token(context, server)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy the config-ssh command").click()
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == page.inner_text("#command")


def test_cookie_login_then_the_page(server, context):
    page = open_with_cookie_login(context, server)
    expect(page.locator("h1")).to_have_text(TITLE)
    expect(page.locator("#keys li")).not_to_have_count(0)
    cookies = {cookie["name"] for cookie in page.context.cookies()}
    assert "_xsrf" in cookies


def test_a_key_pasted_in_the_page_logs_in_until_it_is_removed(
    server, setup, ssh_client, context, tmp_path
):
    key = make_key(tmp_path / "pasted")
    line = key.with_suffix(".pub").read_text().strip()
    fp = fingerprint(key.with_suffix(".pub"))
    assert ssh_client.ssh("true", identity=key).returncode == 255
    page = open_with_cookie_login(context, server)
    page.get_by_label("Add a public key").fill(line)
    page.get_by_role("button", name="Add key").click()
    expect(page.locator("#keys-message")).to_have_text(f"Added the key test ({fp}).")
    expect(key_item(page, fp)).to_have_count(1)
    expect(page.get_by_label("Add a public key")).to_have_value("")
    assert line in setup.authorized_keys.read_text().splitlines()
    assert ssh_client.ssh("echo in", identity=key).stdout == b"in\n"

    page.get_by_role("button", name=f"Remove the key test ({fp})").click()
    expect(page.locator("#keys-message")).to_have_text(f"Removed the key test ({fp}).")
    expect(key_item(page, fp)).to_have_count(0)
    assert line not in setup.authorized_keys.read_text()
    refused = ssh_client.ssh("echo in", identity=key)
    assert refused.returncode == 255
    assert b"Permission denied (publickey)" in refused.stderr


@pytest.mark.parametrize(
    "line",
    [
        "ssh-ed25519 not-base64 me@laptop",
        "",
        '<img src=x onerror="document.title=1">',
        'command="rm -rf ~" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHnuq2n1m9b5dTDVIp1wMDhC me',
    ],
)
def test_a_bad_key_line_shows_the_apis_message(server, setup, context, line):
    before = setup.authorized_keys.read_bytes()
    code, answer = api_call(server, "POST", "authorized-keys", json.dumps({"key": line}).encode())
    assert code == 400, answer
    page = open_with_token(context, server)
    page.get_by_label("Add a public key").fill(line)
    page.get_by_role("button", name="Add key").click()
    error = page.locator("#keys-error")
    expect(error).to_have_text(answer["message"])
    expect(error).to_have_attribute("role", "alert")
    # As text, never as HTML.
    assert error.locator("*").count() == 0
    assert page.title() == TITLE
    expect(page.locator("#keys-message")).to_have_text("")
    assert setup.authorized_keys.read_bytes() == before


def test_a_key_already_there_shows_the_apis_conflict(server, setup, client_key, context):
    line = client_key.with_suffix(".pub").read_text().strip()
    page = open_with_token(context, server)
    page.get_by_label("Add a public key").fill(line)
    page.get_by_role("button", name="Add key").click()
    expect(page.locator("#keys-error")).to_have_text(
        f"the key {fingerprint(client_key.with_suffix('.pub'))} is already authorized"
    )


def test_a_cross_site_form_post_is_refused(server, setup, context, tmp_path):
    """Another site (here another port) posts a form to the API while the browser
    holds the Jupyter cookie. The body is a valid request and the cookie goes
    along (same site), but jupyter_server refuses a cross-origin API request
    (404, APIHandler's origin check); and a request from this very origin
    without the XSRF token gets 403."""
    key = make_key(tmp_path / "attacker")
    line = key.with_suffix(".pub").read_text().strip()
    # enctype=text/plain makes name=value a JSON body: {"key": "...", "pad": "="}
    name = '{"key": "' + line + '", "pad": "'
    target = f"{server.url}{API}authorized-keys"
    evil = f"""<!doctype html><title>free prizes</title>
<form method="post" action="{html.escape(target)}" enctype="text/plain">
<input type="hidden" name="{html.escape(name)}" value='"}}'></form>
<script>document.forms[0].submit()</script>"""
    attacker = ThreadingHTTPServer(("127.0.0.1", free_port()), AttackerPage)
    attacker.page = evil.encode()
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    before = setup.authorized_keys.read_bytes()
    try:
        page = open_with_token(context, server)  # the victim is logged in
        with page.expect_response(lambda r: r.url == target) as answer:
            page.goto(f"http://127.0.0.1:{attacker.server_port}/")
        response = answer.value
    finally:
        attacker.shutdown()
        attacker.server_close()
        thread.join(10)
    assert response.request.method == "POST"
    assert response.request.header_value("origin") == f"http://127.0.0.1:{attacker.server_port}"
    assert f"username-127-0-0-1-{server.port}=" in (response.request.header_value("cookie") or "")
    assert (response.status, response.json()["message"]) == (404, "Not Found")
    assert setup.authorized_keys.read_bytes() == before

    # From this origin, with the cookie but without the XSRF token: 403.
    sent = response.request.post_data_buffer
    page = open_with_token(context, server)
    refused = page.evaluate(
        """async ([url, body]) => {
            const response = await fetch(url, {method: "POST", body});
            return [response.status, (await response.json()).message];
        }""",
        [target, sent.decode()],
    )
    assert refused == [403, "'_xsrf' argument missing from POST"]
    assert setup.authorized_keys.read_bytes() == before

    # The same body with the token (no cookie, so no XSRF check) is a valid
    # request: the origin and XSRF checks are what refused it.
    assert json.loads(sent)["key"] == line
    code, added = api_call(server, "POST", "authorized-keys", sent)
    assert code == 201, added
    query = urllib.parse.quote(added["fingerprint"], safe="")
    assert api_call(server, "DELETE", f"authorized-keys?fingerprint={query}")[0] == 204
    assert setup.authorized_keys.read_bytes() == before


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_narrow_window_light_and_dark(server, context, scheme, tmp_path):
    # A long comment must wrap too.
    key = make_key(tmp_path / "long")
    line = [*key.with_suffix(".pub").read_text().split()[:2], "x" * 200]
    code, added = api_call(
        server, "POST", "authorized-keys", json.dumps({"key": " ".join(line)}).encode()
    )
    assert code == 201, added
    try:
        page = open_with_token(
            context, server, viewport={"width": 360, "height": 740}, color_scheme=scheme
        )
        expect(page.locator(f'#keys li[data-fingerprint="{added["fingerprint"]}"]')).to_have_count(
            1
        )
        width, inner = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
        assert width <= inner == 360
        colours = page.evaluate(
            "[getComputedStyle(document.documentElement).backgroundColor,"
            " getComputedStyle(document.querySelector('h1')).color]"
        )
        if scheme == "dark":
            assert colours == ["rgb(15, 20, 25)", "rgb(230, 237, 243)"]
        else:
            assert colours == ["rgb(255, 255, 255)", "rgb(31, 35, 40)"]
        page.screenshot(path=tmp_path / f"narrow-{scheme}.png", full_page=True)
    finally:
        query = urllib.parse.quote(added["fingerprint"], safe="")
        api_call(server, "DELETE", f"authorized-keys?fingerprint={query}")


def test_sshd_problems_show_as_the_api_words_them(setup, context):
    broken = setup.server(JUPYTER_SSHD_PROXY_SSHD_PATH="/nonexistent/sshd").start()
    try:
        # A connection attempt: the server logs why sshd cannot start.
        knock(broken)
        last_error = broken.status()["last_error"]
        assert "/nonexistent/sshd" in last_error
        code, answer = api_call(broken, "GET", "host-keys")
        assert code == 503
        page = open_with_token(context, broken)
        expect(page.locator("#status-error")).to_have_text(last_error)
        expect(page.locator("#status-error")).to_have_class("problem")
        expect(page.locator("#host-keys-error")).to_have_text(answer["message"])
        expect(page.locator("#host-keys li")).to_have_count(0)
    finally:
        broken.stop()


# ------------------------------------------------------- routes, login, launcher


def test_the_page_and_its_files_need_a_login(server):
    code, _ = server.request("GET", PAGE, token=None)
    assert code == 302
    code, _ = server.request("GET", "/sshd-proxy/static/page.js", token=None)
    assert code in (302, 403)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", PAGE, headers={"Authorization": f"token {server.token}"})
        response = connection.getresponse()
        response.read()
        policy = response.getheader("Content-Security-Policy")
    finally:
        connection.close()
    assert response.status == 200
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert server.request("GET", "/sshd-proxy/static/page.js")[0] == 200
    assert server.request("GET", "/sshd-proxy/static/nothing.js")[0] == 404
    assert server.request("GET", "/sshd-proxy/static/..%2Fpage.py")[0] == 404


def test_the_launcher_tile_opens_the_page(server):
    code, body = server.request("GET", "/server-proxy/servers-info")
    assert code == 200, body
    (entry,) = [s for s in json.loads(body)["server_processes"] if s["name"] == "sshd"]
    assert entry["launcher_entry"] == {
        "enabled": True,
        "title": "SSH",
        "path_info": "sshd-proxy/",
        "category": "Other",
        "icon_url": "/server-proxy/icon/sshd",
    }
    # JupyterLab and Notebook 7 open <base_url> + path_info.
    code, page = server.request("GET", "/" + entry["launcher_entry"]["path_info"])
    assert code == 200
    assert f"<h1>{TITLE}</h1>".encode() in page
    code, icon = server.request("GET", entry["launcher_entry"]["icon_url"])
    assert code == 200
    assert icon == (REPO / "jupyter_sshd_proxy" / "static" / "ssh.svg").read_bytes()


# ------------------------------------------------------------------ on a Hub path


HUB_ENV = {
    "JUPYTERHUB_USER": "alice",
    "JUPYTERHUB_SERVER_NAME": "",
    "JUPYTERHUB_BASE_URL": "/",
    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
}


def test_hub_info_from_the_spawners_environment():
    assert hub_info({}) is None
    assert hub_info(HUB_ENV) == {
        "token_page": "/hub/token",
        "scope": "access:servers!server=alice/",
    }
    assert hub_info(
        {
            **HUB_ENV,
            "JUPYTERHUB_SERVER_NAME": "gpu",
            "JUPYTERHUB_BASE_URL": "/jh/",
            "JUPYTERHUB_PUBLIC_HUB_URL": "",
        }
    ) == {"token_page": "/jh/hub/token", "scope": "access:servers!server=alice/gpu"}
    assert (
        hub_info({**HUB_ENV, "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/hub/"})[
            "token_page"
        ]
        == "https://hub.example.org/hub/token"
    )


@pytest.fixture(scope="module")
def hub_path_server(setup):
    server = PrefixedServer(
        setup.account,
        setup.run_dir,
        setup.token,
        {**setup.env, **HUB_ENV},
        ["--ServerApp.base_url=/user/alice/"],
        prefix="/user/alice",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_on_a_hub_path(hub_path_server, setup, context, tmp_path):
    server = hub_path_server
    page = open_with_cookie_login(context, server, viewport={"width": 1000, "height": 900})
    name = host_name(f"{server.url}/")
    assert name == f"127.0.0.1-{server.port}-alice"
    expect(page.locator("#command")).to_have_text(
        f"jupyter-sshd-proxy config-ssh {server.url}/ --name {name}"
    )
    expect(page.locator("#token-help")).to_have_text(
        "Make a token on the Hub's token page. It needs the scope "
        "access:servers!server=alice/: a token made on that page has it."
    )
    link = page.get_by_role("link", name="token page")
    expect(link).to_have_attribute("href", "/hub/token")
    expect(page.locator("footer")).to_contain_text("REST API at /user/alice/sshd-proxy/api/")
    # sshd has not run under this server yet.
    expect(page.locator("#status-state")).to_have_text(
        "not started yet: it starts with the first ssh connection"
    )
    expect(page.locator("#status-version")).to_have_text("known once sshd has started")
    expect(page.locator("#status-sessions")).to_have_text("0")
    # Writing works under the prefix (API path, XSRF cookie path), and the key
    # logs in through /user/alice/sshd/.
    key = make_key(tmp_path / "hub-path")
    page.get_by_label("Add a public key").fill(key.with_suffix(".pub").read_text())
    page.get_by_role("button", name="Add key").click()
    fp = fingerprint(key.with_suffix(".pub"))
    expect(page.locator("#keys-message")).to_have_text(f"Added the key test ({fp}).")
    setup.pin_host_keys()
    ssh = SSHClient(server, key, setup.known_hosts, proxy="jupyter-sshd-proxy")
    assert ssh.ssh("echo in", identity=key).stdout == b"in\n"
    page.get_by_role("button", name="Refresh").click()
    status = server.status()
    expect(page.locator("#status-state")).to_have_text(f"running (pid {status['pid']})")
    expect(page.locator("#status-version")).to_have_text(status["version"])
    expect(page.locator("#status-error")).to_have_text("none")
    page.screenshot(path=tmp_path / "page.png", full_page=True)
    page.get_by_role("button", name=f"Remove the key test ({fp})").click()
    expect(key_item(page, fp)).to_have_count(0)


# ------------------------------------------------------------ on a real JupyterHub


@pytest.fixture(scope="module")
def hub_user(run_dir, client_key):
    if os.getuid() != 0:
        pytest.skip("the Hub spawns servers as other system accounts: needs root")
    account = Account.create(f"page{os.getpid()}")
    try:
        home_is_ready(account, client_key.with_suffix(".pub"))
        yield account
    finally:
        account.remove()


@pytest.fixture(scope="module")
def real_hub(run_dir, hub_user):
    workdir = run_dir / "page-hub"
    workdir.mkdir(mode=0o700)
    hub = Hub(workdir, [hub_user]).start()
    try:
        yield hub
    finally:
        hub.stop()


def test_on_a_real_hub(real_hub, hub_user, context, tmp_path):
    """Log in to the Hub as a person does, open the page through the Hub's proxy
    (OAuth to the user's server), and add a key: the Hub's XSRF rules hold."""
    base = f"{real_hub.url}/user/{hub_user.name}"
    page = context(viewport={"width": 1000, "height": 900}).new_page()
    # A link to the page, followed by someone logged out: log in, start the
    # server, and the page opens.
    page.goto(f"{real_hub.url}/hub/login?next={urllib.parse.quote(f'/user/{hub_user.name}{PAGE}')}")
    page.fill("#username_input", hub_user.name)
    page.fill("#password_input", "anything")
    page.click("#login_submit")
    # JupyterHub asks before it starts a server for a link.
    page.get_by_text("Launch Server").click()
    # (The Hub may add ?redirects=N on the way.)
    page.wait_for_url(lambda url: url.startswith(f"{base}{PAGE}"), timeout=120_000)
    loaded(page)
    expect(page.locator("#command")).to_have_text(
        f"jupyter-sshd-proxy config-ssh {base}/ --name {host_name(base + '/')}"
    )
    expect(page.locator("#token-scope")).to_have_text(f"access:servers!server={hub_user.name}/")
    expect(page.get_by_role("link", name="token page")).to_have_attribute("href", "/hub/token")
    key = make_key(tmp_path / "hub")
    line = key.with_suffix(".pub").read_text().strip()
    page.get_by_label("Add a public key").fill(line)
    page.get_by_role("button", name="Add key").click()
    fp = fingerprint(key.with_suffix(".pub"))
    expect(page.locator("#keys-message")).to_have_text(f"Added the key test ({fp}).")
    authorized_keys = hub_user.home / ".ssh" / "authorized_keys"
    assert line in authorized_keys.read_text().splitlines()
    # That key logs in, through the Hub's proxy, with a token from the Hub.
    known_hosts = tmp_path / "known_hosts"
    pin_host_keys(
        known_hosts, "jupyter-test", hub_user.home / ".local/share/jupyter/sshd_proxy/host_keys"
    )
    user_server = HubUserServer(real_hub, hub_user, real_hub.token_for(hub_user.name))
    ssh = SSHClient(user_server, key, known_hosts, proxy="jupyter-sshd-proxy")
    assert ssh.ssh("echo in", identity=key).stdout == b"in\n"
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#status-state")).to_contain_text("running (pid ")
    expect(page.locator("#status-user")).to_have_text(hub_user.name)
    if os.environ.get("JUPYTER_SSHD_PROXY_SCREENSHOT") == "1":
        page.screenshot(path=SCREENSHOT, full_page=True)
    page.get_by_role("button", name=f"Remove the key test ({fp})").click()
    expect(key_item(page, fp)).to_have_count(0)
    assert line not in authorized_keys.read_text()
    assert b"Permission denied (publickey)" in ssh.ssh("true", identity=key).stderr
    # The link leads to the Hub's token page, for the logged-in user.
    response = page.goto(page.locator("#token-page").evaluate("link => link.href"))
    assert response.status == 200
    assert response.url == f"{real_hub.url}/hub/token"
    real_hub.stop_server(hub_user.name)


HOST_NAME_URLS = [
    "https://hub.example.org/user/alice/",
    "https://hub.example.org/user/alice/gpu/",
    "https://hub.example.org/prefix/user/bob/x/",
    "http://127.0.0.1:8888/",
    "http://127.0.0.1:8888/user/a%2Bb/",
    "https://hub.example.org/user/j%C3%B6rg/",
    "http://[::1]:8888/user/alice/",
]


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_the_page_and_config_ssh_pick_the_same_host_name():
    """page.js's hostName() (run by node) against ssh_files.host_name()."""
    source = (REPO / "jupyter_sshd_proxy" / "static" / "page.js").read_text()
    start = source.index("  function hostName(")
    function = source[start : source.index("\n  }\n", start) + 4]
    script = f"{function}\nconsole.log(JSON.stringify({json.dumps(HOST_NAME_URLS)}.map(hostName)));"
    names = subprocess.run(
        ["node", "-e", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert json.loads(names) == [host_name(url) for url in HOST_NAME_URLS]
