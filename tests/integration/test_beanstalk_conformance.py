"""beanstalkd runs the whole conformance suite unchanged."""
from __future__ import annotations

import pytest

from ..conformance import TransportConformance
from .beanstalk_support import beanstalk_url

pytestmark = pytest.mark.beanstalk


class TestBeanstalkConformance(TransportConformance):
    @pytest.fixture
    def url(self) -> str:
        return beanstalk_url()
