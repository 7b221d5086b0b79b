"""The manual in docs/ builds, and says what the code does.

Pure tests: Python only, no sshd, no Jupyter server, a few seconds. The site
is built as docs/development.md says, with warnings as errors; the rest holds
what the pages name (commands, options, settings, variables, files, the Host
block, the Dockerfile lines, the settings table) against the code.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_sshd_proxy.settings import SSHDProxy, config_table_markdown, env_name
from jupyter_sshd_proxy_client.cli import build_parser
from jupyter_sshd_proxy_client.ssh_files import render_block

from ..support.helpers import REPO

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README = REPO / "README.md"
CONTRIBUTING = REPO / "CONTRIBUTING.md"
TEXTS = {path: path.read_text() for path in [README, CONTRIBUTING, *PAGES]}


def code_spans(text: str) -> list[str]:
    """The text of each `inline code` span and each line of each fenced block."""
    spans = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        spans += block.splitlines()
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    spans += re.findall(r"`([^`\n]+)`", prose)
    return spans


def named(pattern: str) -> list[tuple[Path, str]]:
    """(page, match) for each code span or block line of every page that matches."""
    return [
        (path, span)
        for path, text in TEXTS.items()
        for span in code_spans(text)
        if re.search(pattern, span)
    ]


def load_extension():
    spec = importlib.util.spec_from_file_location(
        "settings_table", DOCS / "_ext" / "settings_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    # As docs/development.md says, into a directory of the test's own.
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-b", "html", "docs", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for page in PAGES:
        assert (tmp_path / page.with_suffix(".html").name).exists(), page.name
    assert (tmp_path / "_images" / "page.png").exists()
    configuration = (tmp_path / "configuration.html").read_text()
    for name in SSHDProxy.class_traits(config=True):
        assert env_name(name) in configuration


def test_the_settings_table_is_the_one_made_from_the_traits():
    table = re.search(
        r"<!-- config-table:[^\n]*-->\n(.*?)<!-- end config-table -->",
        TEXTS[DOCS / "configuration.md"],
        re.DOTALL,
    )
    assert table, "docs/configuration.md lost its settings table markers"
    assert table.group(1) == config_table_markdown(), load_extension().FIX


def test_the_build_puts_the_generated_table_in_place_of_a_stale_copy():
    extension = load_extension()
    fresh = TEXTS[DOCS / "configuration.md"]
    stale = fresh.replace("`JUPYTER_SSHD_PROXY_LOG_LEVEL` | `'INFO'`", "`X` | `'LOUD'`")
    assert stale != fresh
    assert extension.with_table(stale) == (fresh, True)
    assert extension.with_table(fresh) == (fresh, False)
    with pytest.raises(ValueError, match="markers"):
        extension.with_table("no table")


def test_the_readme_is_a_first_screen_with_links_that_resolve():
    lines = TEXTS[README].splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; keep it to 150"
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", TEXTS[README])
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if "://" not in link:
            assert (REPO / link).exists(), f"README.md links to {link}, which does not exist"


def test_every_command_and_option_named_exists():
    parser = build_parser()
    commands = next(
        action for action in parser._actions if action.dest == "command"
    ).choices  # the subparsers
    seen = set()
    for path, span in named(r"(^|\s)jupyter-sshd-proxy [a-z]|^(proxy|config-ssh|doctor) --"):
        if span.startswith("#"):  # a comment, such as the Host block's markers
            continue
        words = span.split()
        start = words.index("jupyter-sshd-proxy") + 1 if "jupyter-sshd-proxy" in words else 0
        command = words[start]
        assert command in commands, f"{path.name}: `{span}`: no command {command!r}"
        options = commands[command]._option_string_actions
        for index, word in enumerate(words[start + 1 :], start + 1):
            option = word.split("=")[0]
            if option.startswith("--"):
                assert option in options, f"{path.name}: `{span}`: {command} has no {option}"
                choices = options[option].choices
                if choices and index + 1 < len(words):
                    assert words[index + 1] in choices, f"{path.name}: `{span}`"
        seen.add(command)
    assert {"proxy", "config-ssh", "doctor", "settings"} <= seen
    # An option named on its own (`--dry-run`) belongs to one of the commands.
    every_option = {option for sub in commands.values() for option in sub._option_string_actions}
    # ... or to the certificate authority's own command line (python -m jupyter_sshd_proxy.ca).
    from jupyter_sshd_proxy.ca.__main__ import build_parser as ca_parser

    every_option |= set(ca_parser()._option_string_actions)
    for path, span in named(r"^--[a-z]"):
        option = span.split()[0]
        assert option in every_option, f"{path.name}: no command has {option}"


SETTING = re.compile(r"\bc\.(SSHDProxy|ServerApp|JupyterHub)\.([a-z_]+)")


def settings_named(klass: str) -> list[tuple[Path, str]]:
    return [
        (path, name)
        for path, text in TEXTS.items()
        for found, name in SETTING.findall(text)
        if found == klass
    ]


def test_every_setting_named_exists():
    traits = SSHDProxy.class_traits(config=True)
    assert settings_named("SSHDProxy")
    for path, name in settings_named("SSHDProxy"):
        assert name in traits, f"{path.name}: c.SSHDProxy.{name} is not a setting"


def test_every_jupyter_server_and_hub_setting_named_exists():
    # Importing both applications takes a few seconds: a test of its own.
    from jupyter_server.serverapp import ServerApp
    from jupyterhub.app import JupyterHub

    for klass in (ServerApp, JupyterHub):
        assert settings_named(klass.__name__)
        traits = klass.class_traits(config=True)
        for path, name in settings_named(klass.__name__):
            assert name in traits, f"{path.name}: c.{klass.__name__}.{name} is not a setting"


def test_every_variable_named_is_read_somewhere():
    sources = "".join(
        path.read_text()
        for folder in ("jupyter_sshd_proxy", "client", "tests", "benchmarks", "fuzzing")
        for path in (REPO / folder).rglob("*.py")
    )
    settings = {env_name(name) for name in SSHDProxy.class_traits(config=True)}
    for path, text in TEXTS.items():
        variables = re.findall(r"\b(JUPYTER_SSHD_PROXY_[A-Z_]*[A-Z]|KEEP_TEST_WORK)", text)
        for variable in set(variables):
            assert variable in settings or f'"{variable}"' in sources, (
                f"{path.name}: nothing reads {variable}"
            )


FILE = re.compile(r"(\.ci|tests|benchmarks|fuzzing|jupyter_sshd_proxy|client|docs)/")


def test_every_file_named_exists():
    for path, span in named(FILE.pattern):
        for word in span.split():
            if FILE.match(word) and "_build" not in word:
                assert (REPO / word).exists(), f"{path.name}: `{span}`: no {word}"
    for path, text in TEXTS.items():
        for link in re.findall(r"\]\((\.\./[^)#]+|[^):#]+\.(?:yml|png|py))\)", text):
            assert (path.parent / link).exists(), f"{path.name} links to {link}"


def test_the_host_block_shown_is_the_one_config_ssh_writes():
    users = TEXTS[DOCS / "users.md"]
    shown = re.search(r"<!-- host-block:[^\n]*-->\n```\n(.*?)```", users, re.DOTALL)
    assert shown, "docs/users.md lost its Host block"
    home = "/home/me/.ssh"
    proxy_argv = [
        "/usr/bin/python3", "-P", "-m", "jupyter_sshd_proxy_client", "proxy",
        "--token-file", f"{home}/jupyter-sshd-proxy/myhub.token",
        "https://hub.example.org/user/NAME/",
    ]  # fmt: skip
    block = render_block(
        name="myhub",
        user="jovyan",
        proxy_argv=proxy_argv,
        identity_file=f"{home}/id_ed25519",
        known_hosts=f"{home}/jupyter-sshd-proxy/known_hosts",
        control_dir=f"{home}/jupyter-sshd-proxy",
    )
    assert shown.group(1) == block


def test_the_dockerfile_lines_shown_are_the_dockerfiles_own():
    from ..support.dockerfile import instructions

    blocks = [
        block
        for text in TEXTS.values()
        for block in re.findall(r"```dockerfile\n(.*?)```", text, re.DOTALL)
    ]
    assert blocks
    steps = [f"{keyword} {arguments}" for keyword, arguments in instructions()]
    for line in "".join(blocks).splitlines():
        assert line in steps, line


def test_the_configuration_example_is_taken_by_the_settings(monkeypatch):
    from traitlets.config import Config

    for name in SSHDProxy.class_traits(config=True):
        monkeypatch.delenv(env_name(name), raising=False)
    examples = re.findall(
        r"```python\n(# jupyter_server_config.py\n.*?)```",
        TEXTS[DOCS / "configuration.md"],
        re.DOTALL,
    )
    assert examples
    for example in examples:
        c = Config()
        exec(example, {"c": c})
        settings = SSHDProxy(config=c)
        for name, value in c.SSHDProxy.items():
            assert getattr(settings, name) == value


def test_the_docs_extra_is_in_the_test_extra():
    # ./run tests installs the test extra, so the docs extra installs wherever it does.
    requires = importlib.metadata.requires("jupyter-sshd-proxy") or []
    docs = {r.split(";")[0].strip() for r in requires if re.search(r"extra == .docs.", r)}
    test = {r.split(";")[0].strip() for r in requires if re.search(r"extra == .test.", r)}
    assert docs
    assert docs <= test


def test_first_screen_has_the_commands_and_ci_runs_the_test_one():
    first_screen = "\n".join(TEXTS[README].splitlines()[:15])
    assert "./run demo " in first_screen
    assert "./run tests " in first_screen
    assert "./run unit " in first_screen
    assert "exec ./run tests\n" in (REPO / ".ci" / "run").read_text()
