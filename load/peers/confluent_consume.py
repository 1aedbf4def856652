"""confluent-kafka (librdkafka) consuming a topic to its end: the read ceiling, and a faster-client prototype.

``--mode read``: ``Consumer.consume(num_messages=500)`` in a loop, each message's value touched
(``len``) and dropped; the Python client's ceiling on this machine.

``--mode detect``: the prototype of a librdkafka backend for rmmwatch (not part of the product): the same
loop, each batch's values through rmmwatch's decode+match (``rmmwatch.events.Detector`` over the bundled
NetSupport rule, ``rmmwatch.rules.load_rules(["bundled:netsupport"])``), no store, no commits, no alerts; it
reports the matches and the distinct devices, so the bench can check it computed the right thing. Needs
``service/`` on PYTHONPATH.

Both use a fresh group, ``auto.offset.reset=earliest``, no auto-commit, 4 MB per-partition fetches
(rmmwatch's aiokafka setting), and a 20 ms fetch back-off (instead of 1 s) when the prefetch queue is
full. Timed from the first message to the last; the result goes to ``--result``.

    python -m load.peers.confluent_consume --bootstrap HOST:PORT --topic T --messages N --result out.json
"""

from __future__ import annotations

import argparse
import uuid

from confluent_kafka import Consumer

from load.peers.common import Clock, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--messages", type=int, required=True, help="messages in the topic (where to stop)")
    parser.add_argument("--mode", choices=("read", "detect"), default="read")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    detector = None
    if args.mode == "detect":
        from rmmwatch.events import Detector
        from rmmwatch.model import BatchResult
        from rmmwatch.rules import load_rules

        detector = Detector(load_rules(["bundled:netsupport"]))
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"peer-confluent-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "max.partition.fetch.bytes": 4 * 1024 * 1024,
        # librdkafka backs off 1 s when its prefetch queue (64 MB) is full, which stalls a consumer that
        # processes (seen here as 2.5 s rounds instead of 0.5 s): a backend would shorten the back-off.
        "fetch.queue.backoff.ms": 20,
    })  # fmt: skip
    consumer.subscribe([args.topic])
    clock = Clock()
    seen = 0
    size = 0
    matches = 0
    devices: set[str] = set()
    try:
        while seen < args.messages:
            batch = consumer.consume(num_messages=500, timeout=0.05)  # short: the last, partial batch waits it out
            if not batch:
                continue
            clock.start()
            values = []
            for message in batch:
                if message.error():
                    continue
                value = message.value() or b""
                size += len(value)
                values.append(value)
            seen += len(values)
            if detector is not None:
                result = detector.process(values, BatchResult())
                matches += len(result.matches)
                devices.update(str(m.group[0]) for m in result.matches)
        clock.stop()
    finally:
        consumer.close()
    write_result(args.result, clock, messages=seen, bytes=size, matches=matches, devices=len(devices))


if __name__ == "__main__":
    main()
