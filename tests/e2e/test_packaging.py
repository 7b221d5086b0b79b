"""What users install, built as they get it: two distributions from this repository.

jupyter-sshd-proxy-client (client/) is the laptop side: the command, and the
modules both sides share, with websockets as its only dependency.
jupyter-sshd-proxy (the root) is the server side, and depends on exactly its
version of the client. Each is built here as a wheel and an sdist; each sdist
builds the same wheel again; the client's wheel alone goes into a new
virtualenv (websockets from the package index), within its budget, and its
command sets up `ssh NAME` against a real Jupyter server, and ssh gets in.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ..support.helpers import REPO, VENV_BIN
from ..support.laptop import EXISTING_CONFIG, env_with_token, laptop_home

CLIENT = REPO / "client"
# The laptop's budget (issue 15): what installing the client brings, at most.
MAX_DISTRIBUTIONS = 3
MAX_BYTES = 5 * 1024 * 1024
SERVER_ONLY = ("jupyter_server", "tornado", "traitlets", "jinja2", "jupyter_sshd_proxy.")


def build(project: Path, out: Path, target: str) -> Path:
    """hatchling's wheel or sdist of project (as `pip wheel` / `python -m build` make them)."""
    result = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", target, "-d", str(out)],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (archive,) = out.glob("*.whl" if target == "wheel" else "*.tar.gz")
    return archive


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """{"client": (wheel, sdist), "server": (wheel, sdist)}, built from this checkout."""
    found = {}
    for part, project in (("client", CLIENT), ("server", REPO)):
        out = tmp_path_factory.mktemp(part)
        found[part] = (
            build(project, out / "wheel", "wheel"),
            build(project, out / "sdist", "sdist"),
        )
    return found


def metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name).decode()


def requires(wheel: Path) -> list[str]:
    return re.findall(r"^Requires-Dist: (.*)$", metadata(wheel), re.MULTILINE)


def version_of(init: Path) -> str:
    match = re.search(r'^__version__ = "([^"]+)"$', init.read_text(), re.MULTILINE)
    assert match, init
    return match.group(1)


def test_the_server_wheel_carries_the_license_the_config_and_the_type_marker(archives):
    wheel, _ = archives["server"]
    names = zipfile.ZipFile(wheel).namelist()
    license_files = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
    assert license_files, names
    text = zipfile.ZipFile(wheel).read(license_files[0]).decode()
    assert text == (REPO / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "jupyter_sshd_proxy/py.typed" in names
    assert any(
        name.endswith("data/data/etc/jupyter/jupyter_server_config.d/jupyter_sshd_proxy.json")
        for name in names
    ), names
    assert "License-Expression: BSD-3-Clause" in metadata(wheel)
    # The laptop side is the client's alone: no copy of it, and the command is its.
    assert not [name for name in names if name.startswith("jupyter_sshd_proxy_client/")]
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert "[console_scripts]" not in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_server_requires_exactly_its_own_version_of_the_client(archives):
    wheel, _ = archives["server"]
    version = version_of(REPO / "jupyter_sshd_proxy" / "__init__.py")
    assert version_of(CLIENT / "jupyter_sshd_proxy_client" / "__init__.py") == version
    assert f"jupyter-sshd-proxy-client=={version}" in requires(wheel)
    assert not [r for r in requires(wheel) if r.startswith("websockets")], "the client's"
    assert f"Version: {version}\n" in metadata(archives["client"][0])


def test_the_client_wheel_is_the_command_and_the_shared_modules(archives):
    wheel, _ = archives["client"]
    names = zipfile.ZipFile(wheel).namelist()
    tracked = subprocess.run(
        ["git", "ls-files", "jupyter_sshd_proxy_client"],
        cwd=CLIENT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert "jupyter_sshd_proxy_client/keys/grammar.py" in tracked
    assert set(tracked) <= set(names)
    assert [name for name in names if not name.startswith("jupyter_sshd_proxy_client")] == []
    assert requires(wheel) == ["websockets>=15.0"]
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert zipfile.ZipFile(wheel).read(entry_points).decode().split() == [
        "[console_scripts]",
        "jupyter-sshd-proxy",
        "=",
        "jupyter_sshd_proxy_client.cli:main",
    ]
    (license_name,) = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
    assert zipfile.ZipFile(wheel).read(license_name).decode() == (REPO / "LICENSE").read_text()
    assert "License-Expression: BSD-3-Clause" in metadata(wheel)


@pytest.mark.parametrize("part", ["client", "server"])
def test_each_sdist_builds_the_wheel_built_from_the_checkout(archives, part, tmp_path):
    """The sdist holds what a build needs: the wheel built from it has the same files."""
    wheel, sdist = archives[part]
    with tarfile.open(sdist) as archive:
        # The "data" filter where Python has it (3.12 warns without; 3.11.2 has none).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        assert not [n for n in archive.getnames() if n.startswith("/") or ".." in n]
        archive.extractall(tmp_path, **safe)
        names = archive.getnames()
        (license_name,) = [n for n in names if n.count("/") == 1 and n.endswith("/LICENSE")]
        assert archive.extractfile(license_name).read().decode() == (REPO / "LICENSE").read_text()
    (unpacked,) = tmp_path.iterdir()
    again = build(unpacked, tmp_path / "again", "wheel")
    assert sorted(zipfile.ZipFile(again).namelist()) == sorted(zipfile.ZipFile(wheel).namelist())
    assert metadata(again) == metadata(wheel)
    if part == "server":  # a whole source release: `pip install ./client .` works from it
        assert f"{unpacked.name}/client/pyproject.toml" in names
        assert f"{unpacked.name}/client/jupyter_sshd_proxy_client/cli.py" in names


def test_no_client_module_imports_the_server_side():
    """Where both are installed (here), importing every module of the client still
    loads nothing of the server's: not jupyter_server, tornado, traitlets or jinja2."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import jupyter_sshd_proxy_client as package\n"
        "found = pkgutil.walk_packages(package.__path__, package.__name__ + '.')\n"
        "names = [m.name for m in found if m.name != package.__name__ + '.__main__']\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith({SERVER_ONLY!r}))\n"
        "print(len(names), loaded)\n"
    )
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) >= 20
    assert loaded == "[]\n"


@pytest.fixture(scope="module")
def client_alone(archives, tmp_path_factory) -> Path:
    """A new virtualenv with the client's wheel and what it pulls in: nothing else,
    not even pip (the tests' pip installs into it)."""
    venv = tmp_path_factory.mktemp("laptop-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "pip", "--python", str(venv / "bin" / "python"),
         "install", "--quiet", "--disable-pip-version-check", str(archives["client"][0])],
        capture_output=True, text=True, check=False, timeout=240,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    return venv


def test_the_client_alone_installs_within_the_laptops_budget(client_alone):
    code = (
        "import importlib.metadata as m\n"
        "for d in m.distributions():\n"
        "    print(d.metadata['Name'], sum(f.locate().stat().st_size for f in d.files))\n"
    )
    listed = subprocess.run(
        [str(client_alone / "bin" / "python"), "-c", code],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")[:-1]  # fmt: skip
    sizes = {line.split()[0]: int(line.split()[1]) for line in listed}
    assert set(sizes) == {"jupyter-sshd-proxy-client", "websockets"}, sizes
    assert len(sizes) <= MAX_DISTRIBUTIONS
    site = next((client_alone / "lib").glob("python3*/site-packages"))
    on_disk = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert sum(sizes.values()) <= MAX_BYTES, sizes
    assert on_disk <= MAX_BYTES, on_disk  # with what pip leaves besides (__pycache__, RECORD)


def test_the_client_alone_says_what_the_server_side_commands_need(client_alone):
    command = str(client_alone / "bin" / "jupyter-sshd-proxy")
    version = subprocess.run([command, "--version"], capture_output=True, text=True, check=False)
    assert (version.returncode, version.stderr) == (0, "")
    assert version.stdout == "jupyter-sshd-proxy {}\n".format(
        version_of(CLIENT / "jupyter_sshd_proxy_client" / "__init__.py")
    )
    for words in (["settings"], ["demo"]):
        result = subprocess.run([command, *words], capture_output=True, text=True, check=False)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == (
            f"jupyter-sshd-proxy: `jupyter-sshd-proxy {words[0]}` needs the server side, and "
            "only the client is installed here: install jupyter-sshd-proxy (from a checkout: "
            "pip install ./client .)\n"
        )


def test_the_client_alone_sets_up_ssh_and_ssh_gets_in(client_alone, server, setup):
    """config-ssh with the new virtualenv's command, then `ssh myhub` through the
    ProxyCommand it wrote (that virtualenv's Python), to a real Jupyter server."""
    python = client_alone / "bin" / "python"
    with laptop_home() as home:
        config = home / ".ssh" / "config"
        result = subprocess.run(
            [str(client_alone / "bin" / "jupyter-sshd-proxy"), "config-ssh", server.url + "/",
             "--name", "myhub", "--ssh-config", str(config)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env=env_with_token(server.token), timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        text = config.read_text()
        assert text.endswith("\n" + EXISTING_CONFIG)
        token_file = home / ".ssh" / "jupyter-sshd-proxy" / "myhub.token"
        assert (
            f"    ProxyCommand {python} -P -m jupyter_sshd_proxy_client proxy --token-file "
            f"{token_file} {server.url}/\n"
        ) in text
        ssh = subprocess.run(
            ["ssh", "-F", str(config), "-o", "ControlMaster=no", "myhub",
             "echo $USER; hostname"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env=env_with_token(None), timeout=60, check=False,
        )  # fmt: skip
        assert ssh.returncode == 0, ssh.stderr
        assert ssh.stdout == f"{setup.account.name}\n{os.uname().nodename}\n"
