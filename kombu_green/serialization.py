"""Turn message bodies into bytes and back, refusing formats nobody opted into.

A message carries its format in ``content_type`` (which codec) and
``content_encoding`` (which charset, or ``"binary"``). Producers pick a
serializer by name; consumers decode by content type, but only formats in
their *accept* set: unpickling (or full YAML loading) data from an untrusted
producer runs arbitrary code, so the default accept set is JSON only.

Names, content types and the JSON wire format for extended types
(``{"__type__": ..., "__value__": ...}``) match kombu 5.3, so messages
interoperate with kombu/Celery processes on the same broker.
"""
from __future__ import annotations

import base64
import importlib
import json
import pickle
import uuid
from collections.abc import Collection, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache, partial
from typing import Any, Callable, NamedTuple

from .exceptions import (
    ContentDisallowed,
    DecodeError,
    EncodeError,
    KombuError,
    SerializerNotInstalled,
)

__all__ = [
    "DEFAULT_SERIALIZER", "TRUSTED_CONTENT", "SerializerRegistry", "registry",
    "dumps", "loads", "register", "unregister", "register_json_type",
    "prepare_accept_content", "enable_insecure_serializers",
    "disable_insecure_serializers",
]

DEFAULT_SERIALIZER = "json"

#: Decoding these runs no codec, so they pass any accept set. So do ``text/*``
#: types with no registered codec (see :meth:`SerializerRegistry.is_trusted`).
TRUSTED_CONTENT = frozenset(
    {"application/data", "application/octet-stream", "application/text"}
)
_RAW_CONTENT = frozenset({"application/data", "application/octet-stream"})
_BINARY = "binary"

Encoder = Callable[[Any], "str | bytes"]
Decoder = Callable[[Any], Any]


class _Codec(NamedTuple):
    name: str
    content_type: str
    content_encoding: str
    encoder: Encoder
    decoder: Decoder


@lru_cache(maxsize=512)
def _normalize_type(content_type: str | None) -> str:
    """Compare content types case-insensitively and without parameters."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


class SerializerRegistry:
    """Codecs by name and content type, plus the default accept set."""

    def __init__(self) -> None:
        self._by_name: dict[str, _Codec] = {}
        self._by_type: dict[str, _Codec] = {}
        self.type_to_name: dict[str, str] = {}
        self.name_to_type: dict[str, str] = {}
        self.default_serializer: str = DEFAULT_SERIALIZER
        #: Content types decoded when a consumer passes ``accept=None``.
        self.default_accept: set[str] = set()

    def register(
        self, name: str, encoder: Encoder, decoder: Decoder, content_type: str,
        content_encoding: str = "utf-8",
    ) -> None:
        """Add (or replace) the codec called ``name``.

        The decoder gets ``str`` for text encodings and ``bytes`` when
        ``content_encoding`` is ``"binary"``, so codecs never juggle both.
        """
        if name in self._by_name:
            self.unregister(name)
        ctype = _normalize_type(content_type)
        codec = _Codec(name, ctype, content_encoding.lower(), encoder, decoder)
        self._by_name[name] = codec
        self._by_type[ctype] = codec
        self.type_to_name[ctype] = name
        self.name_to_type[name] = ctype

    def unregister(self, name: str) -> None:
        """Remove a codec; unknown names raise so typos don't pass silently."""
        codec = self._by_name.pop(name, None)
        if codec is None:
            raise SerializerNotInstalled(self._unknown_name(name))
        self.name_to_type.pop(name, None)
        if self._by_type.get(codec.content_type) is codec:
            del self._by_type[codec.content_type]
            self.type_to_name.pop(codec.content_type, None)

    def prepare_accept(self, accept: Iterable[str] | None) -> set[str] | None:
        """Map serializer names and/or content types to content types."""
        if accept is None:
            return None
        if isinstance(accept, str):  # a lone name, not an iterable of letters
            accept = [accept]
        return {self._resolve(item) for item in accept}

    def enable(self, name_or_content_type: str) -> None:
        """Add a format to the default accept set."""
        self.default_accept.add(self._resolve(name_or_content_type))

    def disable(self, name_or_content_type: str) -> None:
        """Remove a format from the default accept set."""
        self.default_accept.discard(self._resolve(name_or_content_type))

    def is_trusted(self, content_type: str) -> bool:
        """Whether decoding runs no codec (raw bytes, or text with no codec)."""
        ctype = _normalize_type(content_type) or "application/data"
        if ctype in TRUSTED_CONTENT:
            return True
        return ctype.startswith("text/") and ctype not in self._by_type

    def _resolve(self, name_or_content_type: str) -> str:
        if "/" in name_or_content_type:
            return _normalize_type(name_or_content_type)
        try:
            return self.name_to_type[name_or_content_type]
        except KeyError:
            raise SerializerNotInstalled(
                self._unknown_name(name_or_content_type)
            ) from None

    def _unknown_name(self, name: str) -> str:
        known = ", ".join(sorted(self._by_name)) or "none"
        return f"No serializer named {name!r} is registered (registered: {known})."

    def dumps(self, data: Any, serializer: str | None = None) -> tuple[str, str, bytes]:
        """Encode ``data``; return ``(content_type, content_encoding, body)``.

        Without a serializer, bytes and text go out untouched (as
        application/data and text/plain) so binary payloads need no codec.
        """
        if serializer is None:
            if isinstance(data, (bytes, bytearray, memoryview)):
                return "application/data", _BINARY, bytes(data)
            if isinstance(data, str):
                return "text/plain", "utf-8", data.encode("utf-8")
            serializer = self.default_serializer
        codec = self._by_name.get(serializer)
        if codec is None:
            raise SerializerNotInstalled(self._unknown_name(serializer))
        try:
            payload = codec.encoder(data)
            if isinstance(payload, str):
                enc = codec.content_encoding
                payload = payload.encode("utf-8" if enc == _BINARY else enc)
            elif isinstance(payload, (bytes, bytearray, memoryview)):
                payload = bytes(payload)
            else:
                raise TypeError(f"encoder returned {type(payload).__name__}")
        except KombuError:
            raise
        except Exception as exc:
            others = ", ".join(n for n in sorted(self._by_name) if n != serializer)
            raise EncodeError(
                f"Cannot serialize a {type(data).__qualname__!r} object with "
                f"{serializer!r}: {exc}. Try another serializer "
                f"({others}) or register a codec for this type."
            ) from exc
        return codec.content_type, codec.content_encoding, payload

    def loads(
        self, data: bytes | bytearray | memoryview | str, content_type: str | None, content_encoding: str | None,
        accept: Collection[str] | None = None, force: bool = False,
    ) -> Any:
        """Decode a body, refusing content types outside ``accept``.

        ``accept`` holds content types (see :meth:`prepare_accept`); ``None``
        means the default accept set. ``force`` skips the check, for callers
        that already vetted the message.
        """
        ctype = _normalize_type(content_type) or "application/data"
        encoding = (content_encoding or "utf-8").lower()
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not force:
            allowed = self.default_accept if accept is None else accept
            if not self._allowed(ctype, allowed):
                raise ContentDisallowed(self._refusal(ctype, allowed))
        if ctype in _RAW_CONTENT:
            return data
        codec = self._by_type.get(ctype)
        if codec is None:
            # A type the consumer chose to accept but no codec knows (a JPEG,
            # say): hand over the body itself, as bytes unless it is text.
            if ctype == "application/text" or ctype.startswith("text/") or encoding != _BINARY:
                return _decode_text(data, encoding, ctype)
            return data
        payload: str | bytes
        if codec.content_encoding == _BINARY:
            payload = data.encode("utf-8") if isinstance(data, str) else data
        else:
            charset = codec.content_encoding if encoding == _BINARY else encoding
            payload = _decode_text(data, charset, ctype)
        try:
            return codec.decoder(payload)
        except KombuError:
            raise
        except Exception as exc:
            raise DecodeError(
                f"Cannot deserialize message of content-type {ctype!r} "
                f"({codec.name}): {type(exc).__name__}: {exc}"
            ) from exc

    def _allowed(self, ctype: str, accept: Collection[str]) -> bool:
        # A serializer name in ``accept`` counts too: unambiguous and explicit.
        if self.is_trusted(ctype) or ctype in accept:
            return True
        name = self.type_to_name.get(ctype)
        return name is not None and name in accept

    def _refusal(self, ctype: str, allowed: Collection[str]) -> str:
        name = self.type_to_name.get(ctype)
        label = f" ({name})" if name else ""
        return (
            f"Refusing to deserialize a message of content-type {ctype!r}{label}: "
            f"it is not in the accepted content types {sorted(allowed)!r}. "
            f"Add {name or ctype!r} to the consumer's accept list if you "
            "trust the producer."
        )


def _decode_text(data: bytes | str, encoding: str, ctype: str) -> str | bytes:
    if isinstance(data, str) or encoding == _BINARY:
        return data
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise DecodeError(
            f"Cannot decode message of content-type {ctype!r} as "
            f"{encoding!r}: {exc}"
        ) from exc


# -- JSON with extended types ------------------------------------------------

_json_encoders: dict[type, tuple[str, Callable[[Any], Any]]] = {}
_json_decoders: dict[str, Callable[[Any], Any]] = {}


def register_json_type(
    type_: type, marker: str, encoder: Callable[[Any], Any],
    decoder: Callable[[Any], Any],
) -> None:
    """Teach the json codec a type, as ``{"__type__": marker, "__value__": ...}``.

    ``encoder`` must return something JSON can encode; ``decoder`` gets that
    value back. Subclasses use the closest registered base class.
    """
    _json_encoders[type_] = (marker, encoder)
    _json_decoders[marker] = decoder


def _tagged(marker: str, value: Any) -> dict[str, Any]:
    return {"__type__": marker, "__value__": value}


def _json_default(obj: Any) -> Any:
    to_json = getattr(obj, "__json__", None)
    if to_json is not None:
        return to_json()
    for cls in type(obj).__mro__:  # closest base first: datetime before date
        if cls in _json_encoders:
            marker, encode = _json_encoders[cls]
            return _tagged(marker, encode(obj))
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return _tagged("bytes", raw.decode("utf-8"))
        except UnicodeDecodeError:
            return _tagged("base64", base64.b64encode(raw).decode("ascii"))
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _json_object_hook(obj: dict[str, Any]) -> Any:
    if obj.keys() != {"__type__", "__value__"}:
        return obj
    decode = _json_decoders.get(obj["__type__"])
    if decode is None:
        raise ValueError(f"unknown JSON extended type {obj['__type__']!r}")
    return decode(obj["__value__"])


def _parse_datetime(text: str) -> datetime:
    # Python < 3.11 fromisoformat() rejects the "Z" suffix other producers use.
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _parse_uuid(value: dict[str, Any]) -> uuid.UUID:
    # The hex alone fixes every bit; passing ``version`` too is redundant and
    # raises on Python < 3.14 for version 6-8 UUIDs, so it is ignored.
    return uuid.UUID(hex=value["hex"])


register_json_type(datetime, "datetime", datetime.isoformat, _parse_datetime)
register_json_type(date, "date", date.isoformat, date.fromisoformat)
register_json_type(time, "time", time.isoformat, time.fromisoformat)
register_json_type(Decimal, "decimal", str, Decimal)
register_json_type(
    uuid.UUID, "uuid", lambda u: {"hex": u.hex, "version": u.version}, _parse_uuid
)
_json_decoders["bytes"] = lambda text: text.encode("utf-8")
_json_decoders["base64"] = lambda text: base64.b64decode(text.encode("ascii"))


# -- pickle, YAML, msgpack ---------------------------------------------------

PICKLE_PROTOCOL = 4  # readable by every Python 3 that kombu peers may run


def _require(module: str, package: str) -> Any:
    """Import an optional codec library, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SerializerNotInstalled(
            f"The {module!r} serializer needs the {package} library: "
            f"pip install {package}"
        ) from None


def _lazy(module: str, package: str, func: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Bind ``module.func`` at call time, so the codec exists without its library."""

    def call(arg: Any) -> Any:
        return getattr(_require(module, package), func)(arg, **kwargs)

    call.__name__ = f"{module}_{func}"
    return call


# -- the process-wide registry -----------------------------------------------

registry = SerializerRegistry()
registry.register(
    "json", partial(json.dumps, default=_json_default),
    json.JSONDecoder(object_hook=_json_object_hook).decode, "application/json", "utf-8",
)
registry.register(
    "pickle", partial(pickle.dumps, protocol=PICKLE_PROTOCOL), pickle.loads,
    "application/x-python-serialize", _BINARY,
)
registry.register(  # safe_* only: full YAML loading can build any Python object
    "yaml", _lazy("yaml", "PyYAML", "safe_dump"),
    _lazy("yaml", "PyYAML", "safe_load"), "application/x-yaml", "utf-8",
)
registry.register(
    "msgpack", _lazy("msgpack", "msgpack", "packb", use_bin_type=True),
    _lazy("msgpack", "msgpack", "unpackb", raw=False), "application/x-msgpack", _BINARY,
)
registry.enable("json")

dumps = registry.dumps
loads = registry.loads
register = registry.register
unregister = registry.unregister


def prepare_accept_content(accept: Iterable[str] | None) -> set[str] | None:
    """Turn a consumer's accept list (names or content types) into content types."""
    return registry.prepare_accept(accept)


def enable_insecure_serializers(
    choices: Iterable[str] = ("pickle", "yaml", "msgpack"),
) -> None:
    """Let consumers with ``accept=None`` decode these formats too.

    Only do this when every producer on the broker is trusted.
    """
    for choice in choices:
        registry.enable(choice)


def disable_insecure_serializers(allowed: Iterable[str] | None = ("json",)) -> None:
    """Reset the default accept set to exactly ``allowed`` (None: nothing)."""
    registry.default_accept = registry.prepare_accept(allowed or ()) or set()
