"""The NetSupport hunting job written idiomatically with Quix Streams (its RocksDB state), for the bench.

The pipeline, as the Quix docs write stateful aggregations::

    envelopes (JSON)  ->  .apply(records, expand=True)  ->  .filter(query)  ->  .apply(project)
      ->  .group_by(DeviceId)  (a repartition topic, as Quix re-keys)  ->  .apply(fold, stateful=True)

``query`` is :class:`load.peers.common.Predicate` (the ``has 'netsupport'`` term match, the 5-day window
and the rule's exclusions); the per-device state (Count, FirstSeen, LastSeen, the set of ReportIds) lives
in Quix's RocksDB state store (with its changelog topic, Quix's default). Processing guarantee at-least-once
(Quix's default), a fresh consumer group, ``earliest``.

It stops once it has filtered ``--records`` records and applied every match it emitted (counted on both
sides of the repartition), then writes the result: timings (first record to last), peak RSS, and each
device's last state as the stateful step emitted it (its output, the way a sink would see it).

    python -m load.peers.quix_job --bootstrap HOST:PORT --topic T --records N --result out.json
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import uuid
from typing import Any

from quixstreams import Application, State

from load.peers.common import Clock, Predicate, fold, project, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True, help="records in the topic (where to stop)")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    clock = Clock()
    predicate = Predicate()
    counts = {"records": 0, "emitted": 0, "applied": 0}
    output: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=f"peer-quix-{args.topic}-{uuid.uuid4().hex[:8]}",  # the bench deletes topics by name
            auto_offset_reset="earliest",
            state_dir=state_dir,
            loglevel="WARNING",
            consumer_extra_config={"max.partition.fetch.bytes": 4 * 1024 * 1024},
        )

        def done() -> None:
            if counts["records"] >= args.records and counts["applied"] >= counts["emitted"]:
                clock.stop()
                app.stop()

        def records(envelope: dict[str, Any]) -> list[Any]:
            clock.start()
            found = envelope.get("records") if isinstance(envelope, dict) else None
            return found if isinstance(found, list) else []

        def query(record: dict[str, Any]) -> bool:
            counts["records"] += 1
            keep = isinstance(record, dict) and predicate.match(record) is not None
            if keep:
                counts["emitted"] += 1
            else:
                done()
            return keep

        def summarize(event: dict[str, Any], state: State) -> dict[str, Any]:
            summary = fold(state.get("summary"), event)
            state.set("summary", summary)
            return {"DeviceId": event["DeviceId"], **summary}

        def emitted(summary: dict[str, Any]) -> None:
            output[summary["DeviceId"]] = summary
            counts["applied"] += 1
            done()

        topic = app.topic(args.topic, value_deserializer="json")
        sdf = app.dataframe(topic)
        sdf = sdf.apply(records, expand=True)
        sdf = sdf.filter(query)
        sdf = sdf.apply(lambda record: project(record.get("properties", record)))
        sdf = sdf.group_by(lambda event: event["DeviceId"], name="device")
        sdf = sdf.apply(summarize, stateful=True)
        sdf = sdf.update(emitted)
        app.run()
    if not clock.last:
        raise SystemExit("quix_job: stopped before the end of the topic")
    write_result(args.result, clock, records=counts["records"], matches=counts["applied"], devices=output)


if __name__ == "__main__":
    main()
