"""What users install: the wheel and the sdist carry the license and the config."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile

import pytest

from ..support.helpers import REPO


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-t", "sdist", "-d", str(out)],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def test_the_wheel_carries_the_license_the_config_and_the_type_marker(archives):
    wheel, _ = archives
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
    metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
    assert "License-Expression: BSD-3-Clause" in zipfile.ZipFile(wheel).read(metadata).decode()


def test_the_sdist_carries_the_license(archives):
    _, sdist = archives
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        (license_name,) = [name for name in names if name.endswith("/LICENSE")]
        text = archive.extractfile(license_name).read().decode()
    assert text == (REPO / "LICENSE").read_text()
