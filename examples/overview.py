"""The "quick overview" of kombu's first README, runnable as is.

A media exchange routes "video" and "image" messages to their queues;
one connection.drain_events() loop serves both consumers.
"""
import socket

from _url import broker_url

from kombu_green import BrokerConnection, Consumer, Exchange, Producer, Queue

media_exchange = Exchange("media", "direct", durable=True)
video_queue = Queue("video", exchange=media_exchange, key="video")
image_queue = Queue("image", exchange=media_exchange, key="image")

processed = []


def process_media(body, message):
    print(f"processing {message.delivery_info['routing_key']}: {body}")
    processed.append(body)
    message.ack()


# connections/channels (the README also shows the keyword form:
# BrokerConnection("localhost", "guest", "guest", "/") for AMQP)
connection = BrokerConnection(broker_url())
channel = connection.channel()

# consume (declared first, so the messages below have somewhere to go)
consumer = Consumer(channel, video_queue)
consumer.register_callback(process_media)
consumer.consume()

# produce
producer = Producer(channel, exchange=media_exchange, serializer="json")
producer.publish({"name": "/tmp/lolcat1.avi", "size": 1301013}, routing_key="video")

# Process messages on all channels
while len(processed) < 1:
    connection.drain_events(timeout=5)

# Consume from several queues on the same channel:
consumer = Consumer(channel, [video_queue, image_queue])
consumer.register_callback(process_media)
consumer.consume()
producer.publish({"name": "/tmp/lolcat2.avi", "size": 42}, routing_key="video")
producer.publish({"name": "/tmp/lolcat.jpg", "size": 7}, routing_key="image")

while len(processed) < 3:
    try:
        connection.drain_events(timeout=5)
    except socket.timeout:
        break
connection.release()
print(f"done: {len(processed)} media messages processed")
