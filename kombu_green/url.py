"""Broker URLs: ``transport://userid:password@hostname:port/virtual_host?opts``.

Parsing is strict (a bad port is an error, not a silent default) and no
message or repr produced here ever contains the password.
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .exceptions import InvalidURL

__all__ = ["URL", "WHOLE_URL_SCHEMES", "as_url", "mask_url", "parse_url", "coerce_option"]

#: Schemes whose driver parses the URL itself (several hosts, SRV records,
#: the driver's own query options): the Connection keeps such a URL whole.
WHOLE_URL_SCHEMES = frozenset({"mongodb", "mongodb+srv"})

#: Query options that configure the Connection itself; all others are
#: transport options.
CONNECTION_OPTIONS = frozenset(
    {"ssl", "heartbeat", "connect_timeout", "login_method", "insist", "failover_strategy"}
)


class URL(NamedTuple):
    transport: Optional[str]
    hostname: Optional[str]
    port: Optional[int]
    userid: Optional[str]
    password: Optional[str]
    virtual_host: Optional[str]
    options: Dict[str, Any]


def coerce_option(value: str) -> Any:
    """Turn query-string text into the int/float/bool it spells, else keep text."""
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def mask_url(url: str, mask: str = "**") -> str:
    """Return ``url`` with any password replaced by ``mask`` (safe to log).

    Works on malformed input too (no scheme, unescaped ``/`` or ``#`` in the
    password): everything between the first ``:`` of the credentials and
    the last ``@`` is hidden, so a password is never shown even partly.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at == -1:
        return url
    user, colon, _ = rest[:at].partition(":")
    creds = f"{user}:{mask}" if colon else user
    return f"{scheme}{sep}{creds}{rest[at:]}"


def parse_url(url: str) -> URL:
    """Split a broker URL into its parts; raises :class:`InvalidURL`."""
    if "://" not in url:
        raise InvalidURL(f"Not a broker URL (expected transport://host...): {mask_url(url)!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urllib's own message may quote part of the password: never show it.
        bad_port = _port_text(url)
        if bad_port is not None:
            raise InvalidURL(f"Invalid broker URL {mask_url(url)!r}: port {bad_port!r} is not valid: it must be "
                             "a whole number from 1 to 65535") from None
        raise InvalidURL(
            f"Invalid broker URL {mask_url(url)!r}: it cannot be parsed. The port must be a "
            "number from 1 to 65535, an IPv6 host needs [brackets], and / # ? @ : in the "
            "user or password must be percent-encoded (e.g. / as %2F)."
        ) from None
    scheme = parts.scheme or None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    options = {k: coerce_option(v) for k, v in parse_qsl(parts.query, keep_blank_values=True)}
    return URL(
        transport=scheme,
        hostname=unquote(parts.hostname) if parts.hostname else None,
        port=port,
        userid=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        virtual_host=unquote(path) if path else None,
        options=options,
    )


def _port_text(url: str) -> Optional[str]:
    """The port as written in ``url``, when it is not a usable one (else None)."""
    # After the last "@", as mask_url reads it: a password may hold / ? # unencoded.
    host = url.partition("://")[2].rpartition("@")[2].split("/", 1)[0].split("?", 1)[0]
    if host.startswith("["):
        host = host.partition("]")[2]
    _, colon, port = host.partition(":")
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        return port
    return None


def as_url(transport: str, hostname: Optional[str] = None, port: Optional[int] = None,
           userid: Optional[str] = None, password: Optional[str] = None,
           virtual_host: Optional[str] = None, include_password: bool = False,
           mask: str = "**") -> str:
    """Build a URL; the password is shown as ``mask`` unless asked for."""
    auth = ""
    if userid:
        auth = quote(userid, safe="")
        if password:
            auth += ":" + (quote(password, safe="") if include_password else mask)
        auth += "@"
    host = hostname or ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    location = f"{host}:{port}" if port else host
    vhost = "" if virtual_host is None else quote(virtual_host, safe="/")
    return f"{transport}://{auth}{location}/{vhost}"
