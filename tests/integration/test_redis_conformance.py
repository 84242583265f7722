"""Redis runs the whole conformance suite unchanged (redis://, rediss://, sentinel://)."""
from __future__ import annotations

import pytest

from ..conformance import TransportConformance
from .redis_support import redis_url, rediss_url, sentinel_url

pytestmark = pytest.mark.redis


class TestRedisConformance(TransportConformance):
    @pytest.fixture
    def url(self) -> str:
        return redis_url()


class TestRedissConformance(TransportConformance):
    @pytest.fixture
    def url(self) -> str:
        return rediss_url()


class TestSentinelConformance(TransportConformance):
    @pytest.fixture
    def url(self) -> str:
        return sentinel_url()
