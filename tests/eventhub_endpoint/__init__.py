"""Test-only Azure Event Hubs endpoint (AMQP 1.0 over plain TCP) for the real ``azure-eventhub`` SDK.

See ``README.md`` beside this file.  Start one with::

    with EventHubEndpoint(hub="defender", partitions=4) as endpoint:
        client = EventHubConsumerClient.from_connection_string(endpoint.connection_string, consumer_group="$Default")
"""

from .server import DEFAULT_CONSUMER_GROUP, DEFAULT_KEY, DEFAULT_KEY_NAME, EventHubEndpoint, ReceiverInfo
from .store import StoredEvent

__all__ = [
    "DEFAULT_CONSUMER_GROUP",
    "DEFAULT_KEY",
    "DEFAULT_KEY_NAME",
    "EventHubEndpoint",
    "ReceiverInfo",
    "StoredEvent",
]
