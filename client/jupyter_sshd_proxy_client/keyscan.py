"""What sshd really presents, seen through the same WebSocket ssh uses.

ssh-keyscan cannot go through a ProxyCommand, so this runs ssh itself, once
per host key type: only that type's algorithms, an empty known_hosts and
StrictHostKeyChecking=yes. ssh stops as soon as sshd has shown its key
("Host key verification failed"), before any authentication, and its -v
output names that key: "Server host key: ssh-ed25519 SHA256:...".
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

from .errors import CheckFailed
from .untrusted import printable

# The signature algorithms of a key type where they are not its own name.
ALGORITHMS = {"ssh-rsa": "rsa-sha2-512,rsa-sha2-256"}
SERVER_HOST_KEY = re.compile(r"debug1: Server host key: ([a-z0-9@.-]+) (SHA256:[A-Za-z0-9+/]+)")
ALIAS = "jupyter-sshd-proxy-keyscan"  # the name ssh looks the key up under: never known


def fingerprint(blob: str) -> str:
    """SHA256:... of a base64 key, as ssh prints it."""
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def presented(
    key_types: list[str], proxy_command: str, env: dict[str, str], timeout: float = 60
) -> dict[str, str]:
    """{key type: the fingerprint of the key sshd presents for it}; CheckFailed
    when sshd presents none of a type asked for."""
    ssh = shutil.which("ssh")
    if ssh is None:
        msg = "ssh not found on PATH; install OpenSSH's client"
        raise CheckFailed(msg)
    found = {}
    with tempfile.TemporaryDirectory(prefix="jupyter-sshd-proxy-") as directory:
        known_hosts = os.path.join(directory, "known_hosts")
        open(known_hosts, "w").close()  # empty: nothing is known
        for key_type in key_types:
            argv = [
                ssh, "-F", "none", "-v",
                "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known_hosts}",
                "-o", f"GlobalKnownHostsFile={known_hosts}",
                "-o", "UpdateHostKeys=no",
                "-o", f"HostKeyAlgorithms={ALGORITHMS.get(key_type, key_type)}",
                "-o", f"ProxyCommand={proxy_command}",
                ALIAS, "true",
            ]  # fmt: skip
            try:
                result = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                    timeout=timeout, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                msg = f"ssh did not see sshd's {key_type} host key within {timeout:g} s"
                raise CheckFailed(msg) from None
            output = result.stderr.decode(errors="replace")
            match = SERVER_HOST_KEY.search(output)
            if not match or match.group(1) != key_type:
                said = [line for line in output.splitlines() if not line.startswith("debug")]
                msg = (
                    f"sshd presents no {key_type} host key, which the server's host-keys API "
                    f"serves (ssh said: {printable(said[-1] if said else 'nothing', 300)})"
                )
                raise CheckFailed(msg)
            found[key_type] = match.group(2)
    return found
