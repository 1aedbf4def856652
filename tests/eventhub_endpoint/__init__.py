"""Test-only Azure Event Hubs endpoint (AMQP 1.0 over plain TCP) for the real ``azure-eventhub`` SDK.

The API lives in :mod:`.server` (kept out of this file so that collecting the tests does not
import proton when it is not installed; the tests then skip)::

    from tests.eventhub_endpoint.server import EventHubEndpoint

    with EventHubEndpoint(hub="defender", partitions=4) as endpoint:
        client = EventHubConsumerClient.from_connection_string(
            endpoint.connection_string, consumer_group="$Default"
        )

See ``README.md`` beside this file.
"""
