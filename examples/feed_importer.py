"""The feed importer of kombu's first README, with subclassed Producer/Consumer.

The consumer declares a "feed" queue bound to the "feed" exchange with the
routing key "importer"; the producer sends import requests to it.
"""
from _url import broker_url

from kombu_green import BrokerConnection, Consumer, Exchange, Producer, Queue

feed_exchange = Exchange("feed", type="direct")
feed_queue = Queue("feed", feed_exchange, "importer")
imported = []


class FeedProducer(Producer):
    exchange = feed_exchange
    routing_key = "importer"

    def import_feed(self, feed_url):
        return self.publish({"action": "import_feed", "feed_url": feed_url})


class FeedConsumer(Consumer):
    queues = [feed_queue]

    def receive(self, message_data, message):
        action = message_data["action"]
        if action == "import_feed":
            print(f"Got feed import message for: {message_data['feed_url']}")
            imported.append(message_data["feed_url"])  # import_feed(feed_url) here
            message.ack()
        else:
            message.reject()
            raise Exception(f"Unknown action: {action}")


connection = BrokerConnection(broker_url())
channel = connection.channel()

consumer = FeedConsumer(channel)
consumer.consume()

producer = FeedProducer(channel)
producer.import_feed("http://cnn.com/rss/edition.rss")
producer.send({"action": "import_feed", "feed_url": "http://example.com/feed.atom"})
producer.close()

while len(imported) < 2:
    connection.drain_events(timeout=5)
connection.release()
