"""The browser tier's fixtures: one chromium per module, a fresh profile per test."""

from __future__ import annotations

import pytest

from ..support.browser import chromium


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def context(browser):
    """A fresh browser profile (no cookies), closed after the test."""
    contexts = []

    def new(**options):
        contexts.append(browser.new_context(**options))
        return contexts[-1]

    yield new
    for context in contexts:
        context.close()
