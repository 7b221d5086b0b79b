"""Debian's chromium, driven by Playwright (no browser downloads here: the
system's /usr/bin/chromium, which `./run setup` installs)."""

from __future__ import annotations

import contextlib
import os
import shutil

from jupyter_sshd_proxy.procfs import descendants

from .helpers import process_alive, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags chromium reaches out to Google's
# services, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium():
    """A headless chromium; on exit it is closed, with Playwright's driver, and
    none of their processes is left."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        raise AssertionError("chromium is missing: run ./run setup (it installs it)")
    before = set(descendants(os.getpid()))
    playwright = sync_playwright().start()
    started: set[int] = set()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # Playwright's driver and chromium, and later chromium's renderers below them.
        roots = set(descendants(os.getpid())) - before
        started = set(roots)
        try:
            yield browser
        finally:
            for root in roots:
                started.update(descendants(root))
            browser.close()
    finally:
        playwright.stop()
        wait_for(
            lambda: not [pid for pid in started if process_alive(pid)],
            15,
            "chromium and Playwright's driver to exit",
        )
