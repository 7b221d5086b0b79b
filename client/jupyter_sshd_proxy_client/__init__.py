"""The laptop side: the ProxyCommand, config-ssh, doctor and the REST client.

It runs on the user's machine with another dependency budget than the server
side: the standard library and websockets, never jupyter_server or tornado
(ssh starts the ProxyCommand on every connection, and importing those would
be the user's wait). Everything a server answers is untrusted here.
"""

__version__ = "0.1.0"
