"""An authorizer that allows reading and writing but never executing.

Modelled on jupyter_server's own read/write-only example
(examples/authorization/jupyter_temporary_config.py): with it a Jupyter server
refuses terminals, and so must refuse ssh. The tests load it into a real server
with --ServerApp.authorizer_class=no_execute_authorizer.ReadWriteOnly and this
directory on PYTHONPATH.
"""

from __future__ import annotations

from jupyter_server.auth import Authorizer


class ReadWriteOnly(Authorizer):
    """Allow "read" and "write" on every resource; deny "execute"."""

    def is_authorized(self, handler, user, action: str, resource: str) -> bool:
        return action in {"read", "write"}
