"""The Quix Streams peer of `bench/windows.py`: a tumbling count window per message key,
exactly-once, final results only, written to an output topic.

Run by the benchmark with the interpreter of the separate Quix environment (see
bench/requirements-quix.txt: quixstreams pins an older confluent-kafka than Sluice), never
imported by Sluice. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--size-ms", type=int, default=10_000)
    parser.add_argument("--grace-ms", type=int, default=60_000)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    from quixstreams import Application

    app = Application(
        broker_address=args.broker, consumer_group=args.group, auto_offset_reset="latest",
        processing_guarantee="exactly-once", commit_interval=args.commit_interval, state_dir=args.state_dir,
        loglevel=logging.INFO,
    )
    source = app.topic(args.topic, key_deserializer="str", value_deserializer="json")
    sink = app.topic(args.output, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(source)
    # "partition": a record past a window's end + grace closes the windows of every key of
    # its partition (the default, "key", would need a later record of each key).
    sdf = sdf.tumbling_window(duration_ms=args.size_ms, grace_ms=args.grace_ms).count().final(closing_strategy="partition")
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
