"""TLS for every network transport: one way to read options, one context.

Options use kombu's names, given as ``ssl={...}`` on the Connection or as
``ssl_*`` keys in the URL query (``?ssl_ca_certs=/path/ca.pem``):
``ca_certs``, ``certfile``, ``keyfile``, ``cert_reqs`` (an ``ssl.CERT_*``
value or its name), ``server_hostname`` and ``ciphers``. The context is
gevent's, so the handshake and every read wait through the hub.
"""
from __future__ import annotations

import ssl
from typing import Any, Dict, Mapping, Optional, Tuple

from .. import green
from ..exceptions import ConfigurationError

__all__ = ["ssl_context", "ssl_options"]


def ssl_options(ssl_setting: Any, transport_options: Mapping[str, Any]) -> Any:
    """Merge ``Connection(ssl=...)`` with ``ssl_*`` transport/URL options.

    Returns False when TLS is off, else a dict of options (possibly empty:
    verify against the system CAs).
    """
    if not ssl_setting:
        return False
    from_url = {key[4:]: value for key, value in transport_options.items() if key.startswith("ssl_")}
    if ssl_setting is True or isinstance(ssl_setting, str):
        return from_url
    if isinstance(ssl_setting, dict):
        return {**from_url, **ssl_setting}
    raise ConfigurationError(
        f"ssl must be True or a dict of options (ca_certs, certfile, keyfile, cert_reqs, "
        f"server_hostname), not {type(ssl_setting).__name__}")


_CERT_REQS = {"CERT_NONE": ssl.CERT_NONE, "CERT_OPTIONAL": ssl.CERT_OPTIONAL,
              "CERT_REQUIRED": ssl.CERT_REQUIRED}


def ssl_context(options: Dict[str, Any], host: str) -> Tuple[Any, Optional[str]]:
    """Build a gevent TLS context; return it with the name to verify.

    With no options the server certificate is verified against the
    system's CAs and must name ``host``.
    """
    context = green.cooperative_ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cert_reqs = options.get("cert_reqs", ssl.CERT_REQUIRED)
    if isinstance(cert_reqs, str):
        cert_reqs = _CERT_REQS[cert_reqs.upper()]
    if cert_reqs == ssl.CERT_NONE:
        context.check_hostname = False
    context.verify_mode = cert_reqs
    if options.get("ca_certs"):
        context.load_verify_locations(options["ca_certs"])
    elif cert_reqs != ssl.CERT_NONE:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if options.get("certfile"):
        context.load_cert_chain(options["certfile"], options.get("keyfile"))
    if options.get("ciphers"):
        context.set_ciphers(options["ciphers"])
    server_hostname = options.get("server_hostname") or host
    return context, server_hostname
