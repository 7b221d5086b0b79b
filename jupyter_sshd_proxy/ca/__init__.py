"""The Hub's SSH certificate authority: short-lived user certificates per Hub user.

A JupyterHub service (c.JupyterHub.services) that signs a Hub user's OpenSSH
public key with OpenSSH's own ssh-keygen. The certificate's principal names
the Hub user (``hub:<name>``), never a unix account: in most containers every
user is ``jovyan``, and a unix name cannot hold ``:``. Each server's sshd
trusts the authority for its own Hub user's principal only (server.py,
c.SSHDProxy.trusted_user_ca_keys). See docs/certificates.md.

signing.py   pure checks and the ssh-keygen command lines (unit-tested)
state.py     the state directory: the CA key, the trusted keys, the serials
service.py   the Tornado app: HubAuth, POST sign, GET keys, log and audit event
__main__.py  ``python -m jupyter_sshd_proxy.ca``, as the Hub launches it
"""
