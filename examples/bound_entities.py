"""Exchange and Queue are declarations; operations need a bound copy."""
import pickle

from _url import broker_url

from kombu_green import BrokerConnection, Exchange, Queue
from kombu_green.exceptions import NotBoundError

exchange = Exchange("tasks", "direct")
queue = Queue("tasks", exchange, key="tasks")
assert pickle.loads(pickle.dumps(queue)) == queue  # usable in configuration files

connection = BrokerConnection(broker_url())
channel = connection.channel()
bound_exchange = exchange(channel)
bound_exchange.declare()
bound_exchange.delete()
print("bound copy deleted:", bound_exchange)

# the original exchange is not affected, and stays unbound.
try:
    exchange.delete()
except NotBoundError as exc:
    print("NotBoundError:", exc)
connection.release()
