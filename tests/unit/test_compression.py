"""Tests for kombu_green.compression: built-in methods, aliases, errors."""
from __future__ import annotations

import bz2
import importlib
import lzma
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kombu_green import compression
from kombu_green.exceptions import (
    DecodeError,
    EncodeError,
    SerializationError,
    SerializerNotInstalled,
)

BODY = b"The quick brown fox jumps over the lazy dog. " * 50

# alias -> content type, as kombu writes them in the "compression" header
ALIASES = {
    "zlib": "application/x-gzip",
    "gzip": "application/x-gzip",
    "bzip2": "application/x-bz2",
    "bz2": "application/x-bz2",
    "lzma": "application/x-lzma",
    "xz": "application/x-lzma",
    "zstd": "application/zstd",
    "zstandard": "application/zstd",
    "brotli": "application/x-brotli",
}
OPTIONAL = {"zstd": "zstandard", "zstandard": "zstandard", "brotli": "brotli"}


def needs(alias):
    if alias in OPTIONAL:
        pytest.importorskip(OPTIONAL[alias])


@pytest.fixture
def restore_methods(monkeypatch):
    """Let a test register methods without leaking them."""
    monkeypatch.setattr(compression, "_methods", dict(compression._methods))
    monkeypatch.setattr(compression, "_aliases", dict(compression._aliases))


def test_builtin_methods_available():
    assert {"zlib", "bzip2", "lzma"} <= set(compression.encoders())
    assert compression.encoders() == sorted(compression.encoders())


@pytest.mark.parametrize("alias, content_type", sorted(ALIASES.items()))
def test_aliases_map_to_kombu_content_types(alias, content_type):
    needs(alias)
    assert compression.get_content_type(alias) == content_type
    assert compression.get_content_type(content_type) == content_type
    assert compression.get_content_type(alias.upper()) == content_type


@pytest.mark.parametrize("method", compression.encoders())
@pytest.mark.parametrize("body", [BODY, b"", b"\x00\xff" * 3])
def test_roundtrip(method, body):
    compressed, content_type = compression.compress(body, method)
    assert isinstance(compressed, bytes)
    assert content_type == compression.get_content_type(method)
    assert compression.decompress(compressed, content_type) == body
    assert compression.decompress(compressed, method) == body


@pytest.mark.parametrize("method", compression.encoders())
def test_compresses(method):
    compressed, _ = compression.compress(BODY, method)
    assert len(compressed) < len(BODY)


@pytest.mark.parametrize(
    "content_type, reference",
    [("application/x-gzip", zlib), ("application/x-bz2", bz2), ("application/x-lzma", lzma)],
)
def test_wire_format_matches_stdlib(content_type, reference):
    # kombu peers use the plain stdlib functions; both directions must work.
    assert compression.decompress(reference.compress(BODY), content_type) == BODY
    compressed, _ = compression.compress(BODY, content_type)
    assert reference.decompress(compressed) == BODY


def test_zstd_reads_frames_without_content_size():
    zstandard = pytest.importorskip("zstandard")
    streamer = zstandard.ZstdCompressor().compressobj()
    frame = streamer.compress(BODY) + streamer.flush()
    assert compression.decompress(frame, "application/zstd") == BODY
    assert zstandard.ZstdDecompressor().decompress(compression.compress(BODY, "zstd")[0]) == BODY


def test_brotli_wire_format():
    brotli = pytest.importorskip("brotli")
    assert compression.decompress(brotli.compress(BODY), "application/x-brotli") == BODY


@pytest.mark.parametrize("method", compression.encoders())
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_data_raises_decode_error(method, damage):
    compressed, content_type = compression.compress(BODY, method)
    body = b"this is not compressed at all" if damage == "garbage" else compressed[:-4]
    with pytest.raises(DecodeError) as info:
        compression.decompress(body, content_type)
    assert method in str(info.value)
    assert info.value.__cause__ is not None
    assert isinstance(info.value, SerializationError)


def test_unknown_method_lists_available():
    with pytest.raises(SerializerNotInstalled) as info:
        compression.compress(BODY, "snappy")
    assert "'snappy'" in str(info.value)
    for name in compression.encoders():
        assert name in str(info.value)
    with pytest.raises(SerializerNotInstalled, match="application/x-snappy"):
        compression.decompress(BODY, "application/x-snappy")
    with pytest.raises(SerializerNotInstalled):
        compression.get_content_type("snappy")


def test_register_custom_method(restore_methods):
    compression.register(
        lambda b: b[::-1], lambda b: b[::-1], "application/x-rev", aliases=("rev", "reverse")
    )
    assert "rev" in compression.encoders()
    assert compression.compress(b"abc", "reverse") == (b"cba", "application/x-rev")
    assert compression.decompress(b"cba", "application/x-rev") == b"abc"
    assert compression.decompress(b"cba", "rev") == b"abc"

    compression.unregister("rev")
    assert "rev" not in compression.encoders()
    for name in ("rev", "reverse", "application/x-rev"):
        with pytest.raises(SerializerNotInstalled):
            compression.get_content_type(name)


def test_register_without_aliases_uses_content_type(restore_methods):
    compression.register(bytes, bytes, "application/x-identity")
    assert "application/x-identity" in compression.encoders()
    assert compression.compress(b"x", "application/x-identity") == (
        b"x", "application/x-identity"
    )


def test_failing_encoder_raises_encode_error(restore_methods):
    def broken(_):
        raise RuntimeError("disk on fire")

    compression.register(broken, bytes, "application/x-broken", aliases=("broken",))
    with pytest.raises(EncodeError, match="broken") as info:
        compression.compress(b"x", "broken")
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize("module, name", [("zstandard", "zstd"), ("brotli", "brotli")])
def test_optional_methods_absent_without_library(monkeypatch, module, name):
    try:
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)  # makes the import fail
            importlib.reload(compression)
            assert name not in compression.encoders()
            assert "zlib" in compression.encoders()
            with pytest.raises(SerializerNotInstalled):
                compression.decompress(b"x", name)
    finally:
        importlib.reload(compression)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(compression.encoders()))
def test_roundtrip_property(body, method):
    compressed, content_type = compression.compress(body, method)
    assert compression.decompress(compressed, content_type) == body
