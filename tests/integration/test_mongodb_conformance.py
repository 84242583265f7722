"""MongoDB runs the whole conformance suite unchanged."""
from __future__ import annotations

import pytest

from ..conformance import TransportConformance
from .mongodb_support import mongodb_url

pytestmark = pytest.mark.mongodb


class TestMongoDBConformance(TransportConformance):
    @pytest.fixture
    def url(self) -> str:
        return mongodb_url()
