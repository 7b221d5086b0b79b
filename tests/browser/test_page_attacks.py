"""The page under attack: stored and reflected XSS, CSRF from another port,
cookie tossing, framing, hostile Hub settings, and key lines that sshd reads
otherwise than we do. Each test pins the safe behaviour; a docstring that
starts "Found by an attack" tells what an attacker's review once broke.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import threading
import urllib.parse
from http.server import ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from ..support.helpers import SSHClient, free_port, knock, make_key
from ..support.pages import (
    API,
    PAGE,
    TITLE,
    AttackerPage,
    PrefixedServer,
    api_call,
    fingerprint,
    loaded,
    open_with_token,
)


@contextlib.contextmanager
def keys_file_restored(setup):
    before = setup.authorized_keys.read_bytes()
    try:
        yield
    finally:
        setup.authorized_keys.write_bytes(before)


@contextlib.contextmanager
def attacker_site(page_html: str):
    """Another origin on the same host (a sibling loopback port): same site."""
    attacker = ThreadingHTTPServer(("127.0.0.1", free_port()), AttackerPage)
    attacker.page = page_html.encode()
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{attacker.server_port}"
    finally:
        attacker.shutdown()
        attacker.server_close()
        thread.join(10)


def page_key_fingerprints(page) -> list[str]:
    return page.eval_on_selector_all("#keys li", "items => items.map(i => i.dataset.fingerprint)")


# ------------------------------------------------ keys sshd accepts, the page hides


def _key_and_blob(tmp_path, name):
    key = make_key(tmp_path / name)
    key_type, blob, _ = key.with_suffix(".pub").read_text().split()
    return key, key_type, blob


HIDDEN_KEY_LINES = {
    # A comment longer than keys.MAX_LINE: sshd reads lines of any length.
    "long-line": lambda t, b: f"{t} {b} backdoor{'x' * (17 * 1024)}",
    # A NUL byte: sshd's C string ends there; Python refuses the whole line.
    "nul-byte": lambda t, b: f"{t} {b} backdoor\0 anything",
    # sshd honours \" inside a quoted option; _split_options does not.
    "escaped-quote-option": lambda t, b: f'from="*,\\" x" {t} {b} backdoor',
    # A CR inside a quoted option: sshd's line ends only at LF; bytes.splitlines()
    # also splits at CR, and neither half parses.
    "cr-in-option": lambda t, b: f'from="*,x\r" {t} {b} backdoor',
}


@pytest.mark.parametrize("trick", sorted(HIDDEN_KEY_LINES))
def test_key_sshd_accepts_is_listed(server, setup, context, tmp_path, trick):
    """BROKEN: a line that sshd accepts but keys.parse_key() refuses is skipped by
    keys.read_keys() ("junk"), so the page (and GET authorized-keys) does not
    show a key that logs in, cannot remove it (DELETE answers 404), and with no
    other key the page even says "nobody can log in with ssh". Whoever once
    wrote to ~/.ssh/authorized_keys keeps a backdoor the page hides."""
    key, key_type, blob = _key_and_blob(tmp_path, trick)
    fp = fingerprint(key.with_suffix(".pub"))
    line = HIDDEN_KEY_LINES[trick](key_type, blob)
    ssh = SSHClient(server, key, setup.known_hosts, proxy="websocat")
    with keys_file_restored(setup):
        # Only the backdoor line: the page's words for an empty file are the worst case.
        setup.authorized_keys.write_bytes(line.encode() + b"\n")
        logged_in = ssh.ssh("echo in", identity=key)
        assert logged_in.stdout == b"in\n", logged_in.stderr  # sshd accepts the line
        page = open_with_token(context, server)
        listed = page_key_fingerprints(page)
        keys_file_text = page.inner_text("#keys-file")
        code, _ = api_call(
            server, "DELETE", f"authorized-keys?fingerprint={urllib.parse.quote(fp, safe='')}"
        )
        assert fp in listed, f"a key that logs in is not on the page: {keys_file_text!r}"
        assert code == 204, "DELETE cannot remove it either"


def test_masquerade_as_the_users_own_key(server, setup, client_key, context, tmp_path):
    """BROKEN: one line, read two ways. sshd reads from="*,\\" ssh-ed25519 <A> x" as
    one option (from= with patterns '*' and '" ssh-ed25519 <A> x') and then
    authorizes the attacker's key B. keys._split_options() ends the option at
    the escaped quote, so the page shows the user's own key A (its
    fingerprint) a second time and never key B."""
    attacker, key_type, blob_b = _key_and_blob(tmp_path, "masquerade")
    fp_b = fingerprint(attacker.with_suffix(".pub"))
    own = client_key.with_suffix(".pub").read_text().split()
    fp_a = fingerprint(client_key.with_suffix(".pub"))
    line = f'from="*,\\" {own[0]} {own[1]} laptop" {key_type} {blob_b} x'
    ssh = SSHClient(server, attacker, setup.known_hosts, proxy="websocat")
    with keys_file_restored(setup):
        setup.authorized_keys.write_text(" ".join(own) + "\n" + line + "\n")
        logged_in = ssh.ssh("echo in", identity=attacker)
        assert logged_in.stdout == b"in\n", logged_in.stderr  # sshd authorizes key B
        page = open_with_token(context, server)
        listed = page_key_fingerprints(page)
        texts = page.locator("#keys li .key").all_inner_texts()
        assert fp_b in listed, f"key B {fp_b} logs in; the page shows A {fp_a} twice: {texts}"


def test_keys_in_a_second_keys_file(setup, context, tmp_path):
    """Found by an attack (configuration-dependent, low): with two authorized_keys_files the
    page reads only the first, and says 'nobody can log in with ssh' while a
    key in the second logs in."""
    key, key_type, blob = _key_and_blob(tmp_path, "second-file")
    first = setup.base / "attack_keys_first"
    second = setup.base / "attack_keys_second"
    first.write_text("")
    second.write_text(f"{key_type} {blob} second\n")
    for path in (first, second):
        path.chmod(0o600)
        setup.account.own(path)
    with setup.running(JUPYTER_SSHD_PROXY_AUTHORIZED_KEYS_FILES=f"{first}:{second}") as other:
        ssh = SSHClient(other, key, setup.known_hosts, proxy="websocat")
        logged_in = ssh.ssh("echo in", identity=key)
        assert logged_in.stdout == b"in\n", logged_in.stderr
        page = open_with_token(context, other)
        text = page.inner_text("#keys-file")
        assert text == f"These keys may log in, from {first} and {second}:"
        fingerprint = page.inner_text("#keys li .fingerprint")
        assert page.inner_text("#keys li .file") == f"in {second}", fingerprint


# ------------------------------------------------------------------ stored XSS

WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def watched(context, **options):
    """A browser context that records dialogs, console errors and CSP violations."""
    ctx = context(**options)
    ctx.add_init_script(WATCH)
    events = {"dialogs": [], "console": [], "requests": []}

    def on_page(page):
        page.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
        page.on("console", lambda m: events["console"].append(f"{m.type}: {m.text}"))
        page.on("request", lambda r: events["requests"].append(r.url))

    ctx.on("page", on_page)
    return ctx, events


def no_injection(page, events):
    """Evidence that nothing ran and no element came from data."""
    assert events["dialogs"] == []
    assert page.title() == TITLE
    injected = page.evaluate(
        """() => [...document.querySelectorAll('#keys *, #keys-message *, #keys-error *,'
                 + ' #status *, #host-keys *')]
              .map(e => e.tagName.toLowerCase())
              .filter(t => !['li', 'div', 'span', 'code', 'button', 'dt', 'dd'].includes(t))"""
    )
    assert injected == []
    assert page.evaluate("window.__violations") == []
    assert page.evaluate("typeof window.pwned") == "undefined"


XSS_COMMENTS = [
    "<img src=x onerror=\"window.pwned=1;alert('img')\">",
    "</script><script>window.pwned=2;alert('script')</script>",
    '"><svg onload="window.pwned=3;alert(\'svg\')">',
    '\'><iframe srcdoc="<script>parent.pwned=4</script>">',
    "{{7*7}} ${7*7} <!-- -->",
    "javascript:alert(5)",
    "\x1b[31mred\x1b[0m\x08\x08\x7f \u200b\u2028\u2029\ufeff",
    "<" + "a" * 15000,
]
XSS_OPTIONS = [
    'command="<img src=x onerror=window.pwned=6>"',
    'environment="A=</script><svg onload=window.pwned=7>",no-pty',
]


def test_stored_xss_in_authorized_keys(server, setup, context, tmp_path):
    lines, expected = [], {}
    for index, comment in enumerate(XSS_COMMENTS + [""] * len(XSS_OPTIONS)):
        _, key_type, blob = _key_and_blob(tmp_path, f"xss{index}")
        options = XSS_OPTIONS[index - len(XSS_COMMENTS)] if not comment else ""
        lines.append(" ".join(word for word in (options, key_type, blob, comment) if word))
        expected[blob] = (comment, options)
    with keys_file_restored(setup):
        # Invalid UTF-8 and a bidi override, written as bytes, as a careless tool might.
        _, key_type, blob = _key_and_blob(tmp_path, "bytes")
        raw = f"{key_type} {blob} ".encode() + b"\xff\xfe<b>bold</b>\n"
        setup.authorized_keys.write_bytes("\n".join(lines).encode() + b"\n" + raw)
        ctx, events = watched(context)
        page = ctx.new_page()
        page.goto(f"{server.url}{PAGE}?token={server.token}")
        loaded(page)
        no_injection(page, events)
        shown = page.evaluate(
            """() => [...document.querySelectorAll('#keys li')].map(li => [
                li.querySelector('.comment').textContent,
                li.querySelector('.options') ? li.querySelector('.options').textContent : '',
                li.querySelector('button').getAttribute('aria-label')])"""
        )
        assert len(shown) == len(lines) + 1
        for (comment, options, _label), (want_comment, want_options) in zip(
            shown, expected.values()
        ):
            assert comment == (visible(want_comment) or "(no comment)")
            assert options == (f"options: {visible(want_options)}" if want_options else "")
        assert shown[-1][0] == "\ufffd\ufffd<b>bold</b>"
        # Layout: the 15000-character comment wraps.
        width, inner = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
        assert width <= inner
        # Remove one: the message is text too.
        page.locator("#keys li").first.get_by_role("button").click()
        expect(page.locator("#keys-message")).to_contain_text("Removed the key <img src=x")
        no_injection(page, events)


INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """What the page shows of stored text: control and direction characters as \\uXXXX."""
    return INVISIBLE.sub(lambda match: f"\\u{ord(match.group()):04X}", text)


def test_stored_xss_via_post_allow_options(server, setup, context, tmp_path):
    _, key_type, blob = _key_and_blob(tmp_path, "post")
    line = f'command="<svg onload=window.pwned=8>" {key_type} {blob} <img src=x onerror=alert(9)>'
    with keys_file_restored(setup):
        code, added = api_call(
            server, "POST", "authorized-keys",
            json.dumps({"key": line, "allow_options": True}).encode(),
        )  # fmt: skip
        assert code == 201, added
        ctx, events = watched(context)
        page = ctx.new_page()
        page.goto(f"{server.url}{PAGE}?token={server.token}")
        loaded(page)
        no_injection(page, events)
        item = page.locator(f'#keys li[data-fingerprint="{added["fingerprint"]}"]')
        expect(item.locator(".options")).to_have_text(
            'options: command="<svg onload=window.pwned=8>"'
        )
        # Pasted in the page (no allow_options): the API's refusal quotes the options.
        page.get_by_label("Add a public key").fill(f"<svg/onload=alert(10)> {key_type} {blob}")
        page.get_by_role("button", name="Add key").click()
        expect(page.locator("#keys-error")).to_contain_text("<svg/onload=alert(10)>")
        no_injection(page, events)


def test_bidi_override_in_a_comment(server, setup, context, tmp_path):
    """Found by an attack (low): U+202E (RIGHT-TO-LEFT OVERRIDE) at the end of a comment is not
    isolated: it reverses the rest of the line, so the type shows as
    "91552de-hss" and the fingerprint backwards ("...:652AHS"), and a user who
    compares it with ssh-keygen -l sees another key. Same in the Remove
    button's aria-label and the "Removed the key ..." message."""
    key, key_type, blob = _key_and_blob(tmp_path, "bidi")
    fp = fingerprint(key.with_suffix(".pub"))
    with keys_file_restored(setup):
        setup.authorized_keys.write_text(f"{key_type} {blob} me@laptop\u202e\n")
        page = open_with_token(context, server)
        item = page.locator(f'#keys li[data-fingerprint="{fp}"]')
        boxes = item.evaluate(
            """li => Object.fromEntries(['.comment', '.type', '.fingerprint'].map(s => {
                 const box = li.querySelector(s).getBoundingClientRect();
                 return [s, [Math.round(box.top), box.left]];
               }))"""
        )
        item.screenshot(path=tmp_path / "bidi.png")
        # The override is shown, not obeyed ...
        assert item.locator(".comment").inner_text() == "me@laptop\\u202E"
        assert item.locator(".fingerprint").inner_text() == fp
        # ... and the parts stay in reading order: left to right, line by line.
        order = [boxes[part] for part in (".comment", ".type", ".fingerprint")]
        assert order == sorted(order), boxes


# ------------------------------------------------------- reflected and DOM XSS


def test_query_and_fragment(server, context):
    ctx, events = watched(context)
    page = ctx.new_page()
    query = "x=%3Cscript%3Ewindow.pwned%3D1%3C%2Fscript%3E&y=%22%3E%3Csvg%20onload%3Dalert(1)%3E"
    fragment = "#<img src=x onerror=alert(2)>"
    page.goto(f"{server.url}{PAGE}?{query}&token={server.token}{fragment}")
    loaded(page)
    no_injection(page, events)
    # Only the token left the address bar (the rest re-encoded by URLSearchParams).
    left = urllib.parse.urlsplit(page.url)
    assert urllib.parse.parse_qs(left.query) == urllib.parse.parse_qs(query)
    assert left.fragment == "%3Cimg%20src=x%20onerror=alert(2)%3E"
    assert server.token not in page.content()


# (jupyter_server itself fails with ';' (cookie path) or '(' (route regex) in base_url.)
@pytest.mark.parametrize("base_url", ["/o'k=,@~!/", "/a%22b%3Csvg%20onload%3Dalert%281%29%3E/"])
def test_odd_base_url(setup, context, base_url):
    server = PrefixedServer(
        setup.account, setup.run_dir, setup.token, dict(setup.env),
        [f"--ServerApp.base_url={base_url}"], prefix=base_url.rstrip("/"),
    )  # fmt: skip
    try:
        server.start()
        ctx, events = watched(context)
        page = ctx.new_page()
        page.goto(f"{server.url}{PAGE}?token={server.token}")
        loaded(page)
        no_injection(page, events)
        assert page.get_attribute("main", "data-base-url") == base_url
        command = page.inner_text("#command")
        public = f"http://127.0.0.1:{server.port}{base_url}"
        quoted = "'" + public.replace("'", "'\\''") + "'" if "'" in public else public
        assert command == f"jupyter-sshd-proxy config-ssh {quoted} --name 127.0.0.1-{server.port}"
        expect(page.locator("#keys li")).not_to_have_count(0)  # the API answered
    finally:
        server.stop()


HOSTILE_HUB_ENV = {
    "JUPYTERHUB_USER": "<img src=x onerror=window.pwned=1>\"'",
    "JUPYTERHUB_SERVER_NAME": "</code><script>window.pwned=2</script>",
    "JUPYTERHUB_PUBLIC_HUB_URL": "javascript:window.pwned=3//https://",
}


@pytest.mark.parametrize("hub_base", ["/\\evil.example/", "//evil.example/"])
def test_hostile_hub_environment_link(setup, context, hub_base):
    """HELD for script injection (Jinja autoescape, CSP). BROKEN (low, hardening) for
    the "/\\evil.example/" case: the token link follows JUPYTERHUB_BASE_URL
    unvalidated, and the browser reads "/\\evil.example/hub/token" as
    http://evil.example/hub/token ("//evil.example/" is held: url_path_join
    collapses it). The spawner sets the variable, so only a hostile or broken
    Hub configuration can do this."""
    server = setup.server(**HOSTILE_HUB_ENV, JUPYTERHUB_BASE_URL=hub_base).start()
    try:
        ctx, events = watched(context)
        page = ctx.new_page()
        page.goto(f"{server.url}{PAGE}?token={server.token}")
        loaded(page)
        no_injection(page, events)
        expect(page.locator("#token-scope")).to_have_text(
            "access:servers!server=" + HOSTILE_HUB_ENV["JUPYTERHUB_USER"] + "/"
            + HOSTILE_HUB_ENV["JUPYTERHUB_SERVER_NAME"]
        )  # fmt: skip
        href = page.locator("#token-page").evaluate("a => a.href")
        assert href.startswith(server.url), f"the token link leaves the server: {href}"
    finally:
        server.stop()


def test_last_error_with_html(setup, context):
    hostile = "/nonexistent/<img src=x onerror=window.pwned=1>/</dd><script>alert(1)</script>"
    broken = setup.server(JUPYTER_SSHD_PROXY_SSHD_PATH=hostile).start()
    try:
        knock(broken)
        last_error = broken.status()["last_error"]
        assert hostile in last_error
        ctx, events = watched(context)
        page = ctx.new_page()
        page.goto(f"{broken.url}{PAGE}?token={broken.token}")
        loaded(page)
        no_injection(page, events)
        expect(page.locator("#status-error")).to_have_text(last_error)
        expect(page.locator("#host-keys-error")).to_contain_text("<img src=x")
    finally:
        broken.stop()


# ------------------------------------------------- CSRF, framing, cross-site reads


def victim(context, server):
    """A browser context logged in to the server (cookie), and its page."""
    ctx, events = watched(context)
    page = ctx.new_page()
    page.goto(f"{server.url}{PAGE}?token={server.token}")
    loaded(page)
    return ctx, page, events


def test_cross_site_requests(server, setup, client_key, context):
    """From a sibling port (same site, other origin), with the victim's cookie:
    fetch with credentials (no-cors POST, cors DELETE, cors POST with a stolen
    _xsrf cookie in X-XSRFToken), forms (urlencoded with _xsrf, method=DELETE,
    _method=DELETE), and <script src> of the API (XSSI)."""
    fp = fingerprint(client_key.with_suffix(".pub"))
    target = f"{server.url}{API}authorized-keys"
    attacker_key = (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHnuq2n1m9b5dTDVIp1wMDhCtD4Tcxp2s0VTCHmAakxx x"
    )
    evil = f"""<!doctype html><title>evil</title>
<form id=f1 method=post action="{html.escape(target)}" target=sink1>
<input name=_xsrf><input name=key value="{html.escape(attacker_key)}"></form>
<form id=f2 method=DELETE action="{html.escape(target)}" target=sink2>
<input name=fingerprint value="{html.escape(fp)}"><input name=_method value=DELETE></form>
<iframe name=sink1></iframe><iframe name=sink2></iframe>
<script>
window.results = {{}};
const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1];
window.results.cookie = document.cookie;
async function attempt(name, url, init) {{
  try {{
    const r = await fetch(url, init);
    window.results[name] = `${{r.type}} ${{r.status}} ${{await r.text().catch(() => '')}}`;
  }} catch (e) {{ window.results[name] = `error ${{e.message}}`; }}
}}
window.attack = async () => {{
  await attempt("no-cors POST", {json.dumps(target)}, {{method: "POST", mode: "no-cors",
    credentials: "include", body: JSON.stringify({{key: {json.dumps(attacker_key)}}})}});
  await attempt("cors DELETE", {json.dumps(target + "?fingerprint=" + urllib.parse.quote(fp))},
    {{method: "DELETE", credentials: "include"}});
  await attempt("cors POST + stolen X-XSRFToken", {json.dumps(target)}, {{method: "POST",
    credentials: "include", headers: {{"X-XSRFToken": decodeURIComponent(xsrf || "")}},
    body: JSON.stringify({{key: {json.dumps(attacker_key)}}})}});
  document.querySelector("#f1 [name=_xsrf]").value = decodeURIComponent(xsrf || "");
  document.forms.f1.submit();
  document.forms.f2.submit();
  const s = document.createElement("script");
  s.src = {json.dumps(target)};
  s.onerror = () => {{ window.results.xssi = "error event"; }};
  s.onload = () => {{ window.results.xssi = "loaded"; }};
  document.body.append(s);
}};
</script>"""
    before = setup.authorized_keys.read_bytes()
    with attacker_site(evil) as origin:
        ctx, page, _ = victim(context, server)
        responses = []
        ctx.on("response", lambda r: responses.append(r) if r.url.startswith(target) else None)
        page.goto(origin + "/")
        page.evaluate("window.attack()")
        page.wait_for_function("window.results.xssi !== undefined")
        page.wait_for_timeout(1500)  # the two form posts land in their iframes
        results = page.evaluate("window.results")
        seen = []
        for r in responses:
            sent = r.request.all_headers()
            seen.append((r.request.method, r.url[len(server.url):], r.status,
                         sent.get("origin"), "cookie" in sent))  # fmt: skip
        log = [line for line in server.log().splitlines() if "Blocking" in line]
    assert setup.authorized_keys.read_bytes() == before, (results, seen, log)
    # Evidence: the stolen cookie (cookies ignore ports) and what the server answered.
    assert "_xsrf=" in results["cookie"]
    assert results["no-cors POST"] == "opaque 0 "
    assert results["cors DELETE"].startswith("error")
    assert results["cors POST + stolen X-XSRFToken"].startswith("error")
    by_method = {(m, s) for m, _, s, _, _ in seen}
    assert ("POST", 404) in by_method  # origin check (APIHandler.check_origin)
    assert not any(m == "DELETE" and s < 400 for m, _, s, _, _ in seen), seen
    assert results["xssi"] == "error event", results  # nosniff + application/json


def test_framing(server, context):
    """Clickjacking: the page framed by a sibling port is refused
    (CSP frame-ancestors 'self'); no X-Frame-Options header."""
    frame_url = f"{server.url}{PAGE}"
    evil = f'<!doctype html><iframe id=victim src="{html.escape(frame_url)}"></iframe>'
    with attacker_site(evil) as origin:
        _, page, _ = victim(context, server)
        with page.expect_response(lambda r: r.url == frame_url) as answer:
            page.goto(origin + "/")
        response = answer.value
        page.wait_for_timeout(1000)
        framed = [frame.url for frame in page.frames if frame != page.main_frame]
        headers = response.all_headers()
    assert response.status == 200
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    assert "x-frame-options" not in headers
    assert framed, "no frame"
    assert framed[0] != frame_url, framed  # chrome-error://chromewebdata/


def test_xsrf_cookie_tossing_from_a_sibling_port(server, setup, context, tmp_path):
    """Found by an attack (low, denial of service): a sibling port (cookies ignore ports) sets
    _xsrf for this host with a longer path. document.cookie lists it first, and
    page.js prefers it over the token the server put in the page, while the
    server compares against the other _xsrf cookie: every add and remove fails
    with 403 "'_xsrf' argument has invalid format" until the cookie expires."""
    evil = """<!doctype html><script>
document.cookie = "_xsrf=2|attacker|tossed|1; path=/sshd-proxy/";
document.title = "tossed";</script>"""
    key = make_key(tmp_path / "tossing")
    line = key.with_suffix(".pub").read_text().strip()
    with keys_file_restored(setup), attacker_site(evil) as origin:
        ctx, _ = watched(context)
        page = ctx.new_page()
        page.goto(f"{server.url}{PAGE}?token={server.token}")  # logs in, sets _xsrf
        loaded(page)
        page.goto(origin + "/")
        expect(page).to_have_title("tossed")
        page.goto(f"{server.url}{PAGE}")
        loaded(page)
        cookies = page.evaluate("document.cookie")
        page.get_by_label("Add a public key").fill(line)
        page.get_by_role("button", name="Add key").click()
        # (A locator, not wait_for_function: the page's CSP forbids eval.)
        page.locator("#keys-message:not(:empty), #keys-error:not([hidden])").first.wait_for()
        outcome = page.inner_text("#keys-error") or page.inner_text("#keys-message")
        assert outcome.startswith("Added the key"), (cookies, outcome)


def test_headers_survey(server):
    """Evidence only: the headers the page, its assets and the API carry."""
    import http.client

    found = {}
    for path in [PAGE, "/sshd-proxy/static/page.js", "/sshd-proxy/static/ssh.svg",
                 f"{API}authorized-keys"]:  # fmt: skip
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", path, headers={"Authorization": f"token {server.token}"})
        response = connection.getresponse()
        response.read()
        found[path] = {k.lower(): v for k, v in response.getheaders()}
        connection.close()
    page = found[PAGE]
    assert page["cache-control"] == "no-store"
    assert page["x-content-type-options"] == "nosniff"
    for directive in ("frame-ancestors 'self'", "default-src 'none'", "script-src 'self'",
                      "base-uri 'none'", "form-action 'none'"):  # fmt: skip
        assert directive in page["content-security-policy"]


NO_TERMINALS = '''
from jupyter_server.auth.authorizer import Authorizer

class NoTerminals(Authorizer):
    """Everything but the "terminals" resource (as a read-only Hub scope would)."""

    def is_authorized(self, handler, user, action, resource):
        return resource != "terminals"
'''


def test_authorization_without_terminals_rights(setup, tmp_path):
    """A user who may not open terminals: the page and the API refuse (403);
    the three static assets are served to any logged-in user (they hold
    nothing about the server)."""
    module_dir = setup.base / "attack_authorizer"
    module_dir.mkdir(exist_ok=True)
    (module_dir / "attack_no_terminals.py").write_text(NO_TERMINALS)
    server = setup.server(
        "--ServerApp.authorizer_class=attack_no_terminals.NoTerminals", PYTHONPATH=str(module_dir)
    ).start()
    try:
        codes = {
            path: server.request("GET", path)[0]
            for path in [
                PAGE,
                f"{API}status",
                f"{API}authorized-keys",
                f"{API}host-keys",
                "/sshd-proxy/static/page.js",
                "/api/terminals",
            ]
        }
        code, _ = server.request(
            "POST", f"{API}authorized-keys", body=b'{"key": "ssh-ed25519 AAAA"}'
        )
        codes["POST authorized-keys"] = code
    finally:
        server.stop()
    assert codes == {
        PAGE: 403, f"{API}status": 403, f"{API}authorized-keys": 403, f"{API}host-keys": 403,
        "/sshd-proxy/static/page.js": 200, "/api/terminals": 403, "POST authorized-keys": 403,
    }  # fmt: skip


TRAVERSALS = [
    "/sshd-proxy/static/..%2Fpage.py",
    "/sshd-proxy/static/..%2F..%2F..%2Fetc%2Fpasswd",
    "/sshd-proxy/static/%2e%2e%2fpage.py",
    "/sshd-proxy/static/..%5Cpage.py",
    "/sshd-proxy/static/page.js%00.py",
    "/sshd-proxy/static/page.js%2F",
    "/sshd-proxy/static/PAGE.JS",
    "/sshd-proxy/static/page.js;x",
    "/sshd-proxy/static/./page.js",
    "/sshd-proxy/static/../page.py",
    "/sshd-proxy/static/%70age.py",
    "/sshd-proxy/static/__init__.py",
    "/sshd-proxy/templates/page.html",
    "/sshd-proxy/static//etc/passwd",
]


def test_asset_path_traversal(server):
    answers = {path: server.request("GET", path) for path in TRAVERSALS}
    leaked = {p: (c, b[:80]) for p, (c, b) in answers.items() if c == 200}
    assert leaked == {}, leaked
    # A percent-encoded name of a real asset is the asset (tornado decodes the argument).
    assert server.request("GET", "/sshd-proxy/static/%70age.js")[0] == 200


def test_token_in_url(server, context):
    """?token=: not in the HTML, gone from the address bar once the script ran,
    never sent to another origin (no cross-origin request at all)."""
    ctx, events = watched(context)
    page = ctx.new_page()
    referers = []
    page.on("request", lambda r: referers.append((r.url, r.headers.get("referer"))))
    response = page.goto(f"{server.url}{PAGE}?token={server.token}")
    loaded(page)
    assert server.token not in response.text()
    assert server.token not in page.url
    assert server.token not in page.evaluate("document.documentElement.outerHTML")
    assert all(url.startswith(server.url) for url in events["requests"]), events["requests"]
    # The page's own requests (same origin) carry it in Referer until the script
    # has run; jupyter_server scrubs it from its logs.
    with_token = [url for url, referer in referers if referer and server.token in referer]
    assert all(url.startswith(server.url) for url in with_token)


def test_post_allow_options_answers_another_key(server, setup, client_key, tmp_path):
    """Found by an attack (low: needs a caller that sends allow_options, which the page never
    does): POST authorized-keys with allow_options answers 201 with key A's
    fingerprint for a line that sshd reads as authorizing key B."""
    attacker, key_type, blob_b = _key_and_blob(tmp_path, "post-masquerade")
    fp_b = fingerprint(attacker.with_suffix(".pub"))
    own = client_key.with_suffix(".pub").read_text().split()
    line = f'from="*,\\" {own[0]} {own[1]} laptop" {key_type} {blob_b} x'
    ssh = SSHClient(server, attacker, setup.known_hosts, proxy="websocat")
    with keys_file_restored(setup):
        setup.authorized_keys.write_text("")
        code, added = api_call(
            server, "POST", "authorized-keys",
            json.dumps({"key": line, "allow_options": True}).encode(),
        )  # fmt: skip
        logged_in = ssh.ssh("echo in", identity=attacker)
        assert code == 201, added
        assert logged_in.stdout == b"in\n", logged_in.stderr
        assert added["fingerprint"] == fp_b, (added["fingerprint"], fp_b)
