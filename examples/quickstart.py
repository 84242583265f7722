"""Quick start: one producer and several consumer greenlets.

    python examples/quickstart.py                 # in-process memory:// broker
    python examples/quickstart.py amqp://guest:guest@localhost//

Each worker greenlet has its own connection and consumer; they share one
queue, so the broker spreads the tasks between them (prefetch_count=1).
"""
import socket

import gevent
from _url import broker_url

from kombu_green import Connection, Consumer, Exchange, Producer, Queue

URL = broker_url()
TASKS = 12
WORKERS = 3

task_exchange = Exchange("quickstart", "direct", durable=True)
task_queue = Queue("quickstart-tasks", exchange=task_exchange, routing_key="task")
done = []


def worker(name: str) -> None:
    def handle(body, message):
        gevent.sleep(0.01)  # pretend to work; other greenlets run meanwhile
        print(f"{name} processed task {body['n']}")
        done.append(body["n"])
        message.ack()

    with Connection(URL) as connection:
        with Consumer(connection, [task_queue], callbacks=[handle], prefetch_count=1):
            while len(done) < TASKS:
                try:
                    connection.drain_events(timeout=0.5)
                except socket.timeout:
                    pass


def main() -> None:
    with Connection(URL) as connection:
        task_queue(connection).declare()  # so no task is published before its queue exists
        workers = [gevent.spawn(worker, f"worker-{n}") for n in range(1, WORKERS + 1)]
        producer = Producer(connection, exchange=task_exchange, routing_key="task")
        for n in range(TASKS):
            producer.publish({"n": n})
        print(f"published {TASKS} tasks to {connection.as_uri()}")
        gevent.joinall(workers, raise_error=True)
    print(f"all {len(done)} tasks processed by {WORKERS} greenlets")


if __name__ == "__main__":
    main()
