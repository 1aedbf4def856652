"""The NetSupport hunting job written idiomatically with Faust (faust-streaming), for the bench.

Two agents, the way Faust re-keys a stream for a table (a table is updated only from a stream
co-partitioned with it):

* ``detect`` reads the envelopes (``value_serializer="json"``), iterates their records, applies
  :class:`load.peers.common.Predicate` (the ``has 'netsupport'`` term match, the 5-day window and the rule's
  exclusions) and sends each match to an internal topic keyed by DeviceId;
* ``summarize`` reads that topic and folds each event into a ``Table`` (Count, FirstSeen, LastSeen, the
  set of ReportIds), stored in RocksDB (``rocksdb://``, through the rocksdict binding) when it loads, in
  memory otherwise (said in the result), with its changelog topic (Faust's default).

It stops once ``detect`` has seen ``--records`` records and ``summarize`` has applied every match sent,
writes the result (timings from the first record to the last, peak RSS, the table's rows) and stops the
worker.

    python -m load.peers.faust_job --bootstrap HOST:PORT --topic T --records N --result out.json
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import uuid
from typing import Any

import faust

from load.peers.common import Clock, Predicate, fold, project, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True, help="records in the topic (where to stop)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the internal topics")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    try:
        import rocksdict  # noqa: F401

        store = "rocksdb://"
    except ImportError:
        store = "memory://"
    datadir = tempfile.mkdtemp(prefix="faust-state-")
    app_id = f"peer-faust-{args.topic}-{uuid.uuid4().hex[:8]}"  # the bench deletes topics by name
    app = faust.App(
        app_id,
        broker=f"kafka://{args.bootstrap}",
        store=store,
        datadir=datadir,
        topic_partitions=args.partitions,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=4 * 1024 * 1024,
    )
    envelopes = app.topic(args.topic, value_serializer="json")
    matches = app.topic(f"{app_id}-matches", key_type=str, value_serializer="json", partitions=args.partitions,
                        internal=True)  # fmt: skip
    table = app.Table("devices", default=None, partitions=args.partitions)
    clock = Clock()
    predicate = Predicate()
    counts = {"records": 0, "emitted": 0, "applied": 0}
    finished = asyncio.Event()

    def done() -> None:
        if not finished.is_set() and counts["records"] >= args.records and counts["applied"] >= counts["emitted"]:
            clock.stop()
            devices = {key: value for key, value in table.items()}
            write_result(args.result, clock, records=counts["records"], matches=counts["applied"], devices=devices,
                         store=store)  # fmt: skip
            finished.set()
            os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful shutdown

    def crashed(exc: BaseException) -> None:
        print(f"faust_job: an agent crashed: {exc!r}", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGTERM)

    @app.agent(envelopes)
    async def detect(stream: Any) -> None:
        try:
            await _detect(stream)
        except Exception as exc:
            crashed(exc)
            raise

    async def _detect(stream: Any) -> None:
        async for envelope in stream:
            clock.start()
            records = envelope.get("records") if isinstance(envelope, dict) else None
            for record in records if isinstance(records, list) else ():
                counts["records"] += 1
                row = predicate.match(record) if isinstance(record, dict) else None
                if row is not None:
                    counts["emitted"] += 1
                    await matches.send(key=row.get("DeviceId"), value=project(row))
            done()

    @app.agent(matches)
    async def summarize(stream: Any) -> None:
        try:
            await _summarize(stream)
        except Exception as exc:
            crashed(exc)
            raise

    async def _summarize(stream: Any) -> None:
        async for device, event in stream.items():
            table[device] = fold(table.get(device), event)
            counts["applied"] += 1
            done()

    logging.getLogger("faust").setLevel(logging.WARNING)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if not finished.is_set():
            raise SystemExit(f"faust_job: the worker stopped before the end of the topic ({exc.code})") from None
    sys.exit(0)


if __name__ == "__main__":
    main()
