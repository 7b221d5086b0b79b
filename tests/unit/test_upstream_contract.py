"""What jupyter_sshd_proxy/upstream.py relies on in jupyter-server-proxy, item by
item: a release that changes one fails here under that item's name (and the
route then refuses to start sshd, saying which, rather than run unguarded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_sshd_proxy import upstream

ITEMS = [name for name, _ in upstream._contract()]


def test_the_contract_names_each_item_once():
    assert len(ITEMS) == len(set(ITEMS))
    assert "SuperviseAndProxyHandler.unix_socket: mkdtemp for True" in ITEMS


@pytest.mark.parametrize("name", ITEMS)
def test_the_installed_jupyter_server_proxy_keeps(name):
    assert name not in upstream.broken(), (
        f"jupyter-server-proxy {upstream.version()} no longer has {name}; "
        "update jupyter_sshd_proxy/upstream.py"
    )


def test_it_can_guard_the_route():
    assert upstream.problem() is None


def test_the_floor_in_pyproject_is_the_first_supported_release():
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    floor = upstream.FIRST_SUPPORTED.rsplit(".0", 1)[0]  # 4.3.0 -> 4.3
    assert f'"jupyter-server-proxy>={floor}",' in pyproject
