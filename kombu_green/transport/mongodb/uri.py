"""The MongoDB URL, read by us before pymongo sees it.

pymongo parses the URL itself (several hosts, SRV records, its own query
options), but what it says about a bad one changes between its releases --
4.20 stopped naming the unknown option. So the URL is split here first:
hosts and ports are checked by our own rules, our transport options are
taken out of the query, and when pymongo refuses what is left, the option
it refuses is found by asking pymongo about the URL without each option in
turn. The error then names that option and its value in our words, with
pymongo's text after it as detail. No DNS lookup happens here, not even
for ``mongodb+srv://``.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import quote, unquote

import pymongo
from pymongo import errors as mongo_errors
from pymongo import uri_parser

from ...exceptions import ConfigurationError
from ...options import describe_value
from ...url import mask_url

__all__ = ["MongoURL", "describe", "mongo_uri", "parse_mongo_url"]

SCHEMES = ("mongodb://", "mongodb+srv://")
DEFAULT_PORT = 27017


class MongoURL(NamedTuple):
    """A MongoDB URL taken apart: what pymongo gets, and what is ours."""

    #: The URL for pymongo: our options taken out, the rest as written.
    uri: str
    #: ``host:port`` of each host (``name (SRV)`` for mongodb+srv://).
    hosts: Tuple[str, ...]
    #: The database named in the path, or "".
    database: str
    #: pymongo's query options, as written (names keep their case).
    driver_options: Dict[str, str]
    #: Our transport options found in the query (text, checked later).
    ours: Dict[str, str]


def mongo_uri(hostname: Optional[str], port: Optional[int], userid: Optional[str],
              password: Optional[str], virtual_host: Optional[str]) -> str:
    """The URL pymongo gets: a whole ``mongodb://``/``mongodb+srv://`` URL passes
    through; Connection(hostname=..., port=...) parameters are assembled."""
    if hostname and "://" in hostname:
        return hostname
    auth = ""
    if userid:
        auth = quote(userid, safe="") + (":" + quote(password, safe="") if password else "") + "@"
    database = "" if virtual_host in (None, "", "/") else quote(str(virtual_host).strip("/"), safe="")
    return f"mongodb://{auth}{hostname or 'localhost'}:{port or DEFAULT_PORT}/{database}"


def describe(uri: str) -> str:
    """``host:port[,host:port...]`` for error messages (never the password)."""
    try:
        return ",".join(_hosts(uri))
    except ConfigurationError:
        return "localhost:27017"


def parse_mongo_url(uri: str, our_options: Sequence[str] = ()) -> MongoURL:
    """Split ``uri``, take ``our_options`` out of its query, and check the rest.

    Raises :class:`ConfigurationError` naming the part at fault -- a host, a
    port, an option and its value -- whatever pymongo's own message says.
    """
    if not uri.startswith(SCHEMES):
        raise ConfigurationError(f"Not a MongoDB URL (mongodb://host/db or mongodb+srv://host/db): "
                                 f"{mask_url(uri)!r}")
    hosts = _hosts(uri)
    head, _, query = uri.partition("?")
    path = _after_hosts(head)[1]
    database = unquote(path.split("/", 1)[0]) if path else ""
    kept: List[str] = []
    driver_options: Dict[str, str] = {}
    ours: Dict[str, str] = {}
    for item in filter(None, query.replace(";", "&").split("&")):
        key, _, value = item.partition("=")
        name, text = unquote(key), unquote(value)
        if name in our_options:
            ours.setdefault(name, text)
        else:
            kept.append(item)
            driver_options[name] = text
    pymongo_uri = head + ("?" + "&".join(kept) if kept else "")
    if not uri.startswith("mongodb+srv://"):  # parse_uri would resolve the SRV record
        _check_with_pymongo(pymongo_uri, head, kept)
    return MongoURL(pymongo_uri, hosts, database, driver_options, ours)


def _after_hosts(head: str) -> Tuple[str, str]:
    """(userinfo@hosts, path) of the part of the URL before its query."""
    rest = head.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    return netloc, path


def _hosts(uri: str) -> Tuple[str, ...]:
    netloc = _after_hosts(uri.partition("?")[0])[0]
    hosts = netloc.rpartition("@")[2]
    if not hosts:
        raise ConfigurationError(f"MongoDB URL {mask_url(uri)!r} names no host: write mongodb://host[:port]/db")
    if uri.startswith("mongodb+srv://"):
        if "," in hosts or ":" in hosts.strip("[]"):
            raise ConfigurationError(f"MongoDB URL {mask_url(uri)!r}: mongodb+srv:// takes one host name "
                                     "without a port (the SRV record lists the servers)")
        return (f"{hosts} (SRV)",)
    return tuple(_host_with_port(uri, host) for host in hosts.split(","))


def _host_with_port(uri: str, host: str) -> str:
    if host.startswith("["):
        name, _, port = host[1:].partition("]")
        name, port = f"[{name}]", port[1:] if port.startswith(":") else port
    else:
        name, _, port = host.partition(":")
    if not name or name == "[]":
        raise ConfigurationError(f"MongoDB URL {mask_url(uri)!r} has an empty host name in {host!r}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigurationError(f"MongoDB URL host {host!r} is not valid: its port must be a whole number "
                                 f"from 1 to 65535, not {port!r}")
    return f"{name}:{port or DEFAULT_PORT}"


def _refusal(uri: str) -> Optional[str]:
    """pymongo's objection to ``uri``, or None when it accepts it."""
    try:
        uri_parser.parse_uri(uri, warn=False)
    except (mongo_errors.InvalidURI, mongo_errors.ConfigurationError, ValueError, TypeError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _check_with_pymongo(uri: str, head: str, items: List[str]) -> None:
    detail = _refusal(uri)
    if detail is None:
        return
    by = f"pymongo {pymongo.version}"
    if _refusal(head) is not None:  # not the options: the hosts, the credentials or the path
        raise ConfigurationError(f"MongoDB URL {mask_url(head)!r} is not valid ({by}: {detail})")
    # The one option whose removal makes the URL acceptable; else each option refused on its own.
    culprits = [item for index, item in enumerate(items)
                if _refusal(head + "?" + "&".join(items[:index] + items[index + 1:])) is None]
    if len(culprits) != 1:
        culprits = [item for item in items if _refusal(f"{head}?{item}") is not None]
    named = ", ".join(_shown(item) for item in (culprits or items))
    if len(culprits) == 1:
        raise ConfigurationError(f"MongoDB URL option {named} is not valid: {by} refuses it ({detail})")
    if culprits:
        raise ConfigurationError(f"MongoDB URL options {named} are not valid: {by} refuses them ({detail})")
    raise ConfigurationError(f"MongoDB URL options {named} are not valid together: {by} refuses them ({detail})")


def _shown(item: str) -> str:
    key, _, value = item.partition("=")
    return describe_value(unquote(key), unquote(value))
