"""The Python command line that ssh runs for us: the ProxyCommand, the
KnownHostsCommand and the certificate's Match exec.

ssh starts them in its own working directory, which is wherever the user
typed `ssh`: a cloned repository, a downloads folder. Plain `python -m` puts
that directory first on the module path, so a `secrets.py`, a
`websockets.py` or a `jupyter_sshd_proxy_client/` there would run inside
the ProxyCommand, with the token in reach. `-P` (Python 3.11 and newer)
leaves it out and changes nothing else. Older Pythons have only `-I`
(isolated mode: it also drops the user's site-packages and the PYTHON*
variables), used when the client still imports that way: a client installed
with `pip install --user` does not, and gets plain `-m` and a warning.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from typing import Callable

MODULE = "jupyter_sshd_proxy_client"
UNSAFE_PATH_WARNING = (
    "jupyter-sshd-proxy: this Python finds the client only outside isolated mode (-I), "
    "so ssh's working directory comes first on its module path: "
    "install the client with pipx or into a virtualenv, or use Python 3.11 or newer"
)


def python_command(executable: str = sys.executable) -> list[str]:
    """`python -P -m jupyter_sshd_proxy_client` (or its older Pythons' form),
    for ssh to run: add the subcommand and its arguments."""
    return list(_python_command(executable))


@functools.cache  # one check, and one warning, per run
def _python_command(executable: str) -> tuple[str, ...]:
    flags = safe_path_flags(sys.version_info[:2], lambda: _imports_isolated(executable))
    if flags is None:
        print(UNSAFE_PATH_WARNING, file=sys.stderr)
        flags = []
    return (executable, *flags, "-m", MODULE)


def safe_path_flags(
    version: tuple[int, int], imports_isolated: Callable[[], bool]
) -> list[str] | None:
    """The interpreter's flags that keep the working directory off the module
    path, or None if this Python has none that the client survives."""
    if version >= (3, 11):
        return ["-P"]
    if imports_isolated():
        return ["-I"]
    return None


def _imports_isolated(executable: str) -> bool:
    result = subprocess.run(
        [executable, "-I", "-c", f"import {MODULE}"],
        stdin=subprocess.DEVNULL, capture_output=True, cwd="/", timeout=60,
    )  # fmt: skip
    return result.returncode == 0
