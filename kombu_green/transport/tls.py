"""TLS for every network transport: one way to read options, one context.

Options use kombu's names, given as ``ssl={...}`` on the Connection or as
``ssl_*`` keys in the URL query (``?ssl_ca_certs=/path/ca.pem``):
``ca_certs``, ``ca_path``, ``certfile``, ``keyfile``, ``password`` (of the
key), ``cert_reqs`` (an ``ssl.CERT_*`` value or its name),
``check_hostname``, ``server_hostname`` and ``ciphers``. Any other name is
refused rather than ignored. The context is
gevent's, so the handshake and every read wait through the hub.
"""
from __future__ import annotations

import contextlib
import ssl
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from .. import green
from ..exceptions import ConfigurationError
from ..options import check_one, flag, optional, text

__all__ = ["ssl_context", "ssl_options"]

#: ``cert_reqs`` by name: the ssl module's and redis-py's spellings.
_CERT_REQS = {"cert_none": ssl.CERT_NONE, "none": ssl.CERT_NONE,
              "cert_optional": ssl.CERT_OPTIONAL, "optional": ssl.CERT_OPTIONAL,
              "cert_required": ssl.CERT_REQUIRED, "required": ssl.CERT_REQUIRED}


def _cert_reqs(value: Any) -> int:
    if isinstance(value, str) and value.lower() in _CERT_REQS:
        return _CERT_REQS[value.lower()]
    if not isinstance(value, bool) and value in tuple(_CERT_REQS.values()):
        return int(value)
    raise ValueError("CERT_REQUIRED, CERT_OPTIONAL or CERT_NONE (also required, optional, none, "
                     "or the ssl module's value)")


#: The TLS options, by kombu's names (``ssl_`` in front in a URL query; in an
#: ``ssl={...}`` dict with or without it, as kombu's Redis transport takes them).
#: An option not listed is refused: a TLS setting silently ignored is a hole.
CHECKS = {"ca_certs": optional(text), "ca_path": optional(text), "certfile": optional(text),
          "keyfile": optional(text), "password": optional(text), "cert_reqs": _cert_reqs,
          "check_hostname": flag, "server_hostname": optional(text), "ciphers": optional(text)}


def ssl_options(ssl_setting: Any, transport_options: Mapping[str, Any]) -> Any:
    """Merge ``Connection(ssl=...)`` with ``ssl_*`` transport/URL options, checked.

    Returns False when TLS is off, else a dict of options (possibly empty:
    verify against the system CAs). Raises ConfigurationError naming an
    option that is unknown or has a value that cannot work.
    """
    if not ssl_setting:
        return False
    from_url = {key[4:]: value for key, value in transport_options.items() if key.startswith("ssl_")}
    if ssl_setting is True or isinstance(ssl_setting, str):
        given = from_url
    elif isinstance(ssl_setting, dict):
        given = {**from_url, **{key[4:] if key.startswith("ssl_") else key: value
                                for key, value in ssl_setting.items()}}
    else:
        raise ConfigurationError(
            f"ssl must be True or a dict of options (ca_certs, certfile, keyfile, cert_reqs, "
            f"server_hostname, ciphers), not {type(ssl_setting).__name__}")
    options: Dict[str, Any] = {}
    for name, value in given.items():
        if name not in CHECKS:
            raise ConfigurationError(
                f"Unknown TLS option {name!r} (ssl_{name} in a URL): the TLS options are "
                f"{', '.join(sorted(CHECKS))}")
        options[name] = check_one("TLS option", name, value, CHECKS[name])
    return options


def ssl_context(options: Dict[str, Any], host: str) -> Tuple[Any, Optional[str]]:
    """Build a gevent TLS context; return it with the name to verify.

    With no options the server certificate is verified against the
    system's CAs and must name ``host``. A certificate, key or CA file that
    cannot be loaded is a ConfigurationError naming the option and path.
    """
    context = green.cooperative_ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cert_reqs = _cert_reqs(options.get("cert_reqs", ssl.CERT_REQUIRED))
    if cert_reqs == ssl.CERT_NONE or options.get("check_hostname") is False:
        context.check_hostname = False
    context.verify_mode = cert_reqs
    with _loading("ca_certs" if options.get("ca_certs") else "ca_path", options):
        if options.get("ca_certs") or options.get("ca_path"):
            context.load_verify_locations(options.get("ca_certs"), options.get("ca_path"))
        elif cert_reqs != ssl.CERT_NONE:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    with _loading("certfile", options):
        if options.get("certfile"):
            context.load_cert_chain(options["certfile"], options.get("keyfile"), options.get("password"))
    with _loading("ciphers", options):
        if options.get("ciphers"):
            context.set_ciphers(options["ciphers"])
    server_hostname = options.get("server_hostname") or host
    return context, server_hostname


@contextlib.contextmanager
def _loading(name: str, options: Mapping[str, Any]) -> Iterator[None]:
    try:
        yield
    except (OSError, ssl.SSLError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        shown = f"{name}={options.get(name)!r}"
        if name == "certfile" and options.get("keyfile"):
            shown += f" (keyfile={options['keyfile']!r})"
        raise ConfigurationError(f"TLS option {shown} cannot be used: {detail}") from exc
