"""The Python command line that ssh runs: never with ssh's working directory
on the module path."""

from __future__ import annotations

import sys

import pytest

from jupyter_sshd_proxy_client import launcher


def test_this_python_gets_minus_p():
    assert launcher.python_command("/opt/py/bin/python") == [
        "/opt/py/bin/python", "-P", "-m", "jupyter_sshd_proxy_client",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("version", "isolated", "flags"),
    [
        ((3, 13), False, ["-P"]),
        ((3, 11), False, ["-P"]),
        ((3, 10), True, ["-I"]),
        ((3, 9), True, ["-I"]),
        ((3, 9), False, None),
    ],
)
def test_flags_by_version_and_by_where_the_client_is(version, isolated, flags):
    asked = []

    def imports_isolated():
        asked.append(True)
        return isolated

    assert launcher.safe_path_flags(version, imports_isolated) == flags
    assert bool(asked) == (version < (3, 11))  # a subprocess only where needed


def test_the_isolated_import_check_runs_the_interpreter():
    assert launcher._imports_isolated(sys.executable)
    assert not launcher._imports_isolated("/bin/false")


def test_a_client_that_only_imports_unisolated_is_warned_about(monkeypatch, capsys):
    monkeypatch.setattr(launcher.sys, "version_info", (3, 10, 0))
    monkeypatch.setattr(launcher, "_imports_isolated", lambda executable: False)
    assert launcher.python_command("/usr/bin/python3.10") == [
        "/usr/bin/python3.10", "-m", "jupyter_sshd_proxy_client",
    ]  # fmt: skip
    assert launcher.python_command("/usr/bin/python3.10")[1] == "-m"
    assert capsys.readouterr().err == launcher.UNSAFE_PATH_WARNING + "\n"  # once
