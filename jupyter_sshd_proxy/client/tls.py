"""TLS on the laptop: which certificates we trust, and a failure in one line.

Users reach their Hub over https. By default the system's trust store is used
(OpenSSL's, which honours SSL_CERT_FILE and SSL_CERT_DIR); a Hub with a
private CA is trusted with --ca-file, and then only that CA is. Certificates
are always verified: there is no option to turn that off.
"""

from __future__ import annotations

import ssl

from ..errors import TLSError


def context(ca_file: str | None) -> ssl.SSLContext | None:
    """A client context that trusts only ca_file, or None for the default one."""
    if not ca_file:
        return None
    reason: str | None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as error:  # (before OSError: it is one)
        reason = f"not a PEM certificate ({error.reason})"
    except OSError as error:
        reason = error.strerror
    msg = (
        f"cannot load the CA certificate from {ca_file}: {reason}; give --ca-file a PEM "
        "file with the certificate of the CA that signed the Hub's certificate"
    )
    raise TLSError(msg)


def explain(error: ssl.SSLError, host: str | None, port: int) -> str:
    """One line for a failed TLS handshake with host, naming the fix."""
    where = f"{host}:{port}"
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason
        if error.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_
            return (
                f"TLS: the certificate of {where} is not valid for {host} ({reason}); use "
                "the host name the certificate was made for in the URL"
            )
        return (
            f"TLS: cannot verify the certificate of {where} ({reason}); if the Hub uses a "
            "private CA, give its certificate with --ca-file FILE (or set SSL_CERT_FILE)"
        )
    return f"TLS with {where} failed: {error.reason or error}"
