"""RabbitMQ runs the whole conformance suite unchanged (amqp:// and amqps://)."""
from __future__ import annotations

import pytest

from ..conformance import TransportConformance
from .amqp_support import AMQP_URL, amqps_url, require_rabbitmq

pytestmark = pytest.mark.amqp


class TestAMQPConformance(TransportConformance):
    @pytest.fixture
    def url(self) -> str:
        require_rabbitmq()
        return AMQP_URL


class TestAMQPSConformance(TransportConformance):
    @pytest.fixture
    def url(self) -> str:
        require_rabbitmq()
        return amqps_url()
