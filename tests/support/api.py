"""The server extension's REST API, called as a client does, and the
fingerprint ssh-keygen gives a public key file."""

from __future__ import annotations

import json
import subprocess

API = "/sshd-proxy/api"


def call(server, method, path, body=None, token=""):
    """(status, decoded JSON) of one API call; token "" is the server's own."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    data = json.dumps(body).encode() if body is not None else None
    status, answer = server.request(method, API + path, token=token, headers=headers, body=data)
    answer = json.loads(answer) if answer else None
    if isinstance(answer, dict) and answer.get("reason", "") is None:
        del answer["reason"]  # jupyter_server adds it to every refusal
    return status, answer


def fingerprint_of(pub_path) -> str:
    output = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub_path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return output.split()[1]
