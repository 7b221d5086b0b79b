"""The laptop side: the command line, the ProxyCommand, config-ssh, doctor, the
REST client; and what the server side shares with it (errors.py, files.py, keys/).

It is a distribution of its own (jupyter-sshd-proxy-client), with another
dependency budget than the server side: the standard library and websockets,
never jupyter_server or tornado (ssh starts the ProxyCommand on every
connection, and importing those would be the user's wait). Everything a
server answers is untrusted here.
"""

__version__ = "0.1.0"
