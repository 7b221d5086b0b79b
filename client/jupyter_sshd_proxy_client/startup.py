"""The ProxyCommand's start-up, with the garbage collector paused.

Until the WebSocket is open, the ProxyCommand imports socket, urllib.parse,
websockets and what they import: tens of thousands of objects, every one
kept for the life of the process. The collector walked them again and
again meanwhile (some 2 ms of the 50 before sshd's first byte reaches ssh).
pause() stops it (__main__ and the command line, first thing for `proxy`);
resume() (open_websocket(), opened or not) freezes what was made
(gc.freeze(): no later collection walks it again) and starts it again. It
starts again only where pause() stopped it: a caller that has it off keeps
it off.
"""

from __future__ import annotations

import gc

_paused: list[bool] = []


def pause() -> None:
    """Stop the garbage collector until resume()."""
    if gc.isenabled():
        gc.disable()
        _paused.append(True)


def resume() -> None:
    """Start the collector again, where pause() stopped it; once."""
    if _paused:
        _paused.clear()
        gc.freeze()
        gc.enable()
