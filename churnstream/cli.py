"""The ``churnstream`` command: parses arguments, builds settings, hands over to one subcommand.

Each subcommand lives beside the code it drives and is imported only when used, so
``churnstream alerts`` does not pay for importing Evidently.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from churnstream.errors import ChurnstreamError
from churnstream.settings import Settings

# subcommand -> "module:function"; the function takes (args, settings) and returns an exit code.
_HANDLERS = {
    "infra": "churnstream.infra:cli",
    "topics": "churnstream.streams.topics:cli",
    "publish": "churnstream.streams.publish:cli",
    "alerts": "churnstream.streams.alerts:cli",
    "simulate": "churnstream.sources.simulate:cli",
    "dataset": "churnstream.sources.cdnow:cli",
    "features": "churnstream.streams.feature_lookup:cli",
    "train": "churnstream.models.train:cli",
    "models": "churnstream.models.registry:cli",
    "score": "churnstream.streams.scorer:cli",
    "monitor": "churnstream.streams.monitor:cli",
    "rebuild": "churnstream.streams.rebuild:cli",
    "demo": "churnstream.streams.demo:cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="churnstream",
        description="Streaming churn scoring and drift monitoring on Kafka and Redis.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    infra = sub.add_parser("infra", help="start, stop or show the local Kafka broker and Redis server")
    infra.add_argument("action", choices=["up", "down", "status"])

    topics = sub.add_parser("topics", help="manage topics")
    topics.add_argument("action", choices=["create", "list"])
    topics.add_argument("--partitions", type=int, default=None, help="partitions of input topics (default 6)")

    publish = sub.add_parser("publish", help="publish a JSON-lines or CSV file of events")
    publish.add_argument("file", help="a .jsonl/.json or .csv file ('-' for JSON lines on stdin)")
    publish.add_argument(
        "--topic", help="topic base name (orders, support_tickets, ...); inferred per record"
    )

    alerts = sub.add_parser("alerts", help="print churn alerts")
    alerts.add_argument("--follow", "-f", action="store_true", help="keep waiting for new alerts")
    alerts.add_argument("--json", action="store_true", help="one JSON object per line")
    alerts.add_argument("--from-beginning", action="store_true", default=True, help=argparse.SUPPRESS)
    alerts.add_argument("--limit", type=int, default=None, help="stop after this many alerts")

    sim = sub.add_parser("simulate", help="write a simulated business's events with ground truth")
    sim.add_argument("--customers", type=int, required=True)
    sim.add_argument("--days", type=int, required=True)
    sim.add_argument("--seed", type=int, required=True)
    sim.add_argument("--out", required=True)
    sim.add_argument("--drift-at", type=int, default=None, help="day from which the world shifts")
    sim.add_argument("--start", default="2024-01-01T00:00:00Z", help="event time of day 0")

    dataset = sub.add_parser("dataset", help="prepare a real data set as contract events")
    dataset.add_argument("name", choices=["cdnow"])
    dataset.add_argument("--out", required=True)
    dataset.add_argument("--seed", type=int, default=7, help="seed of the simulated tickets")

    feats = sub.add_parser("features", help="print a customer's online features as JSON")
    feats.add_argument("customer_id")
    feats.add_argument("--as-of", default=None, help="RFC 3339 time or epoch ms (default: latest event time)")

    train = sub.add_parser("train", help="train and register the batch model from event files")
    train.add_argument("--events", required=True, help="directory with orders.jsonl, support_tickets.jsonl")
    train.add_argument("--out", default=None, help="model registry directory (default CHURN_MODEL_DIR)")
    train.add_argument("--until", default=None, help="use only events before this time (RFC 3339)")
    train.add_argument("--no-promote", action="store_true", help="register without making it current")

    models = sub.add_parser("models", help="list, promote or roll back model versions")
    models.add_argument("action", choices=["list", "promote", "rollback", "show"])
    models.add_argument("version", nargs="?")
    models.add_argument("--dir", default=None, help="model registry directory (default CHURN_MODEL_DIR)")

    sub.add_parser("score", help="run the scoring worker until SIGTERM/SIGINT")
    sub.add_parser("monitor", help="run the drift monitor until SIGTERM/SIGINT")
    rebuild = sub.add_parser("rebuild", help="rebuild Redis state by replaying the input topics")
    rebuild.add_argument("--yes", action="store_true", help="do not ask before clearing state")

    demo = sub.add_parser("demo", help="the whole story on one machine, end to end")
    demo.add_argument("--customers", type=int, default=None, help="use only this many CDNOW customers")
    demo.add_argument("--keep-running", action="store_true", help="leave Kafka and Redis running at the end")
    demo.add_argument(
        "--serve", action="store_true", help="after the summary, keep the workers up until Ctrl-C"
    )
    demo.add_argument("--train-until", default=None, help="train before this time (default 1997-10-01)")
    demo.add_argument("--replay-until", default=None, help="stop the replay at this time (default: the end)")
    demo.add_argument("--drift-windows", type=int, default=None, help="drift windows to aim for (default 8)")
    demo.add_argument("--prefix", default=None, help="topic prefix of the demo (default demo.)")
    demo.add_argument("--work-dir", default=None, help="the demo's directory (default var/demo)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = Settings.from_env()
        module_name, func_name = _HANDLERS[args.command].split(":")
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args, settings) or 0)
    except ChurnstreamError as exc:
        print(f"churnstream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
