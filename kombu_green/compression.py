"""Compress message bodies, recording the method in the "compression" header.

The header value is the method's content type (kombu's convention), so a
kombu consumer can decompress what kombu_green publishes and vice versa.
Users name a method by any alias ("gzip", "zlib", "zstd") or content type.
Optional methods (zstd, brotli) exist only when their library imports.
"""
from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterable
from typing import Callable, NamedTuple

from .exceptions import DecodeError, EncodeError, SerializerNotInstalled

__all__ = [
    "register", "unregister", "compress", "decompress", "encoders",
    "get_content_type",
]

Transform = Callable[[bytes], bytes]


class _Method(NamedTuple):
    name: str
    content_type: str
    encoder: Transform
    decoder: Transform


_methods: dict[str, _Method] = {}  # by content type
_aliases: dict[str, str] = {}  # alias -> content type


def register(
    encoder: Transform,
    decoder: Transform,
    content_type: str,
    aliases: Iterable[str] = (),
) -> None:
    """Add (or replace) a method; its first alias is the name users see."""
    aliases = [alias.lower() for alias in aliases]
    content_type = content_type.lower()
    name = aliases[0] if aliases else content_type
    _methods[content_type] = _Method(name, content_type, encoder, decoder)
    for alias in aliases:
        _aliases[alias] = content_type


def unregister(name_or_content_type: str) -> None:
    """Remove a method and its aliases (mainly for tests and plugins)."""
    method = _lookup(name_or_content_type)
    del _methods[method.content_type]
    for alias in [a for a, ct in _aliases.items() if ct == method.content_type]:
        del _aliases[alias]


def _lookup(name_or_content_type: str) -> _Method:
    key = (name_or_content_type or "").strip().lower()
    method = _methods.get(_aliases.get(key, key))
    if method is None:
        raise SerializerNotInstalled(
            f"No compression method {name_or_content_type!r} is available "
            f"(available: {', '.join(encoders()) or 'none'})."
        )
    return method


def encoders() -> list[str]:
    """Names of the methods usable in this process, sorted."""
    return sorted(method.name for method in _methods.values())


def get_content_type(name: str) -> str:
    """The header value for a method given by alias or content type."""
    return _lookup(name).content_type


def compress(body: bytes, method: str) -> tuple[bytes, str]:
    """Return the compressed body and the value for the "compression" header."""
    found = _lookup(method)
    try:
        return found.encoder(body), found.content_type
    except Exception as exc:
        raise EncodeError(
            f"Cannot compress message body with {found.name}: {exc}"
        ) from exc


def decompress(body: bytes, content_type: str) -> bytes:
    """Undo :func:`compress`, given the message's "compression" header."""
    found = _lookup(content_type)
    try:
        return found.decoder(body)
    except Exception as exc:
        raise DecodeError(
            f"Cannot decompress message body with {found.name} "
            f"({found.content_type}): {type(exc).__name__}: {exc}"
        ) from exc


# zlib's format under kombu's "x-gzip" name: kombu peers expect exactly this.
register(zlib.compress, zlib.decompress, "application/x-gzip", ("zlib", "gzip"))
register(bz2.compress, bz2.decompress, "application/x-bz2", ("bzip2", "bz2"))
register(lzma.compress, lzma.decompress, "application/x-lzma", ("lzma", "xz"))

try:
    import zstandard
except ImportError:  # optional: pip install zstandard
    pass
else:

    def _zstd_compress(body: bytes) -> bytes:
        return zstandard.ZstdCompressor().compress(body)

    def _zstd_decompress(body: bytes) -> bytes:
        # A decompression object also reads frames that omit their size
        # (streamed by other producers); checking ``eof`` rejects truncation.
        stream = zstandard.ZstdDecompressor().decompressobj()
        data = stream.decompress(body)
        if not getattr(stream, "eof", True):
            raise ValueError("truncated zstd frame")
        return data

    register(
        _zstd_compress, _zstd_decompress, "application/zstd", ("zstd", "zstandard")
    )

try:
    import brotli  # type: ignore[import-untyped]  # ships no type information (no py.typed)
except ImportError:  # optional: pip install brotli
    pass
else:
    register(brotli.compress, brotli.decompress, "application/x-brotli", ("brotli",))
