"""Run the test Event Hubs endpoint until SIGTERM/SIGINT.

    python -m tests.eventhub_endpoint --port 5672 --hub defender --partitions 4

Prints the hub's connection string (``UseDevelopmentEmulator=true``) on stdout once listening.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from .server import DEFAULT_KEY, DEFAULT_KEY_NAME, EventHubEndpoint


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.eventhub_endpoint", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5672, help="TCP port, 0 for a free one (default 5672)")
    parser.add_argument("--hub", default="defender", help="Event Hub name (default defender)")
    parser.add_argument("--partitions", type=int, default=4, help="partition count (default 4)")
    parser.add_argument(
        "--consumer-group",
        action="append",
        dest="consumer_groups",
        help="allowed consumer group (repeatable; default: any name)",
    )
    parser.add_argument("--key-name", default=DEFAULT_KEY_NAME, help="SAS key name clients must use")
    parser.add_argument("--key", default=DEFAULT_KEY, help="SAS key clients must sign tokens with")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve until a termination signal arrives; returns the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    endpoint = EventHubEndpoint(
        hub=args.hub,
        partitions=args.partitions,
        host=args.host,
        port=args.port,
        key_name=args.key_name,
        key=args.key,
        consumer_groups=args.consumer_groups,
    )
    with endpoint:
        print(endpoint.connection_string, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
