"""The Dockerfile, without a Docker engine: lint it, and run its install steps
in a throwaway environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..support.dockerfile import DOCKERFILE, instructions
from ..support.helpers import REPO, VENV_BIN


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(REPO / "Dockerfile")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_stacks_conventions_and_nothing_secret_baked_in():
    steps = instructions()
    assert re.fullmatch(r"quay\.io/jupyter/[\w-]+:\d{4}-\d{2}-\d{2}", steps[0][1]), steps[0]
    assert ("SHELL", '["/bin/bash", "-o", "pipefail", "-c"]') in steps
    users = [arguments for keyword, arguments in steps if keyword == "USER"]
    assert users[-1] == "${NB_UID}"
    apt = next(arguments for keyword, arguments in steps if "apt-get install" in arguments)
    assert "--no-install-recommends openssh-server rsync" in apt
    assert "rm -f /etc/ssh/ssh_host_*" in apt
    assert "rm -rf /var/lib/apt/lists/*" in apt
    for keyword, arguments in steps:
        if keyword in ("COPY", "ADD", "ENV", "ARG"):
            secret = re.search(r"ssh_host|token|password|secret|\.pem|id_\w+", arguments, re.I)
            assert not secret, arguments
    assert "StrictHostKeyChecking" not in DOCKERFILE


def test_apt_step_resolves():
    apt = next(arguments for keyword, arguments in instructions() if "apt-get install" in arguments)
    packages = re.search(r"--no-install-recommends ([\w .-]+?) &&", apt).group(1).split()
    result = subprocess.run(
        ["apt-get", "install", "--simulate", "--yes", "--no-install-recommends", *packages],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the image is Linux")
def test_pip_step_installs_a_working_package(tmp_path):
    """The image's pip step, in a new virtualenv: the route, the extension, the command."""
    source = tmp_path / "jupyter-sshd-proxy"
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    shutil.copytree(
        REPO, source, ignore=shutil.ignore_patterns(*[p.split("/")[-1] for p in ignored if p])
    )
    venv = tmp_path / "image-env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip_step = next(
        arguments for keyword, arguments in instructions() if "pip install" in arguments
    )
    pip_command = pip_step.split("&&")[0].replace("/tmp/jupyter-sshd-proxy", str(source))
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    subprocess.run(pip_command, shell=True, check=True, env=env, capture_output=True)
    listed = subprocess.run(
        [str(venv / "bin" / "jupyter"), "server", "extension", "list"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    plain = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    assert re.search(r"jupyter_sshd_proxy +enabled", plain), plain
    entry_points = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from importlib.metadata import entry_points;"
         "print([e.value for e in entry_points(group='jupyter_serverproxy_servers')])"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert "jupyter_sshd_proxy.server:setup_sshd" in entry_points.stdout
    version = subprocess.run(
        [str(venv / "bin" / "jupyter-sshd-proxy"), "--version"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert version.stdout.startswith("jupyter-sshd-proxy ")
    assert Path(venv / "etc/jupyter/jupyter_server_config.d/jupyter_sshd_proxy.json").exists()
