"""The ``churnstream`` command: parses arguments, builds settings, hands over to one subcommand.

Each subcommand lives beside the code it drives and is imported only when used, so
``churnstream alerts`` does not pay for importing Evidently.

Exit codes follow the tools users know: 0 success, 1 a runtime failure (Kafka or Redis unreachable,
records not delivered, a model that cannot be loaded), 2 a usage or configuration error (a bad flag, a
malformed ``CHURN_*`` variable), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence

from churnstream import __version__
from churnstream._settings_env import KAFKA_PREFIX
from churnstream.errors import ChurnstreamError, ConfigError, StoreError
from churnstream.settings import Settings

log = logging.getLogger("churnstream")

# subcommand -> "module:function"; the function takes (args, settings) and returns an exit code.
_HANDLERS = {
    "infra": "churnstream.local_infra:cli",
    "topics": "churnstream.streams.topics:cli",
    "publish": "churnstream.streams.publish:cli",
    "alerts": "churnstream.streams.alerts:cli",
    "simulate": "churnstream.sources.simulate:cli",
    "dataset": "churnstream.sources.cdnow:cli",
    "features": "churnstream.streams.feature_lookup:cli",
    "train": "churnstream.streams.train_topics:cli",
    "models": "churnstream.streams.retrain:models_cli",
    "retrain": "churnstream.streams.retrain:cli",
    "score": "churnstream.streams.scorer:cli",
    "monitor": "churnstream.streams.monitor:cli",
    "rebuild": "churnstream.streams.rebuild:cli",
    "demo": "churnstream.streams.demo:cli",
    "schema": "churnstream.schemas:cli",
    "config": "churnstream.settings:cli",
    "serve": "churnstream.streams.api:cli",
    "forget": "churnstream.streams.forget:cli",
    "report": "churnstream.streams.report:cli",
}

_KAFKA = "CHURN_KAFKA_BOOTSTRAP (and CHURN_KAFKA_<PROPERTY> client properties), CHURN_TOPIC_PREFIX"
_REDIS = "CHURN_REDIS_URL"
_MODELS = "CHURN_MODEL_DIR"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs, which list settings and ports."""


def _settings_epilog(*lines: str) -> str:
    return (
        "settings and ports:\n"
        + "\n".join(f"  {line}" for line in lines)
        + ("\n\nEvery setting is an environment variable; `churnstream config` prints the effective ones.")
    )


def _day(text: str) -> str:
    """An argparse type: a UTC day, YYYY-MM-DD."""
    import datetime as dt

    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {text!r}") from None


def _positive_int(text: str) -> int:
    """A count given on the command line: a whole number of at least 1.

    >>> _positive_int("5")
    5
    >>> _positive_int("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: not a whole number of at least 1: '0'
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="churnstream",
        description="Streaming churn scoring and drift monitoring on Kafka and Redis.",
        epilog="Run `churnstream COMMAND --help` for what a command does and the settings it reads.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"churnstream {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    # -v is accepted after the subcommand too; SUPPRESS keeps a subcommand from resetting the global one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug details"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str, *epilog: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog=_settings_epilog(*epilog) if epilog else None,
            parents=[common],
            formatter_class=_Formatter,
        )

    infra = command(
        "infra",
        "start, stop or show a local Kafka broker and Redis server (development)",
        "Development only: start a single-node Kafka (from Maven Central jars, needs Java and Maven) and a\n"
        "Redis server on this machine, unless their addresses already answer; stop what this command\n"
        "started; or show what is reachable. Data, logs and pid files go under CHURN_VAR_DIR.",
        f"{_KAFKA}; the broker listens on the CHURN_KAFKA_BOOTSTRAP port (default 9092)",
        f"{_REDIS} (default port 6379), CHURN_VAR_DIR (default var)",
    )
    infra.add_argument("action", choices=["up", "down", "status"])

    topics = command(
        "topics",
        "create (idempotent) or list the contract's topics",
        "`create` makes every input and output topic of the contract that does not exist yet (existing\n"
        "ones are left as they are); `list` prints them with their partition counts.",
        _KAFKA,
        "CHURN_TOPIC_PARTITIONS: partitions of every topic it creates (default 6)",
    )
    topics.add_argument("action", choices=["create", "list"])
    topics.add_argument(
        "--partitions",
        type=_positive_int,
        default=None,
        help="partitions of every topic it creates (default 6)",
    )

    publish = command(
        "publish",
        "publish a JSON-lines or CSV file of events",
        "Validate every record of FILE against the contract and publish the valid ones to their input\n"
        "topics, keyed by customer_id; invalid records are reported with their line number and not sent.\n"
        "Several files are one history: sent in event-time order across the files (publish a history's\n"
        "topics this way, or all before the scorers start, not one after another while they run).\n"
        "Exits 1 when a record was invalid or not delivered.",
        _KAFKA,
        "CHURN_MAX_FUTURE_SKEW_HOURS: how far ahead of the wall clock a timestamp may be",
    )
    publish.add_argument(
        "file",
        nargs="+",
        help="a .jsonl/.json or .csv file ('-' for JSON lines on stdin); several: merged by event time",
    )
    publish.add_argument(
        "--topic", help="topic base name (orders, support_tickets, ...); inferred per record"
    )

    alerts = command(
        "alerts",
        "print churn alerts",
        "Print the alerts on churn_alerts. Without --follow: every alert on the topic, then exit. With\n"
        "--follow: like `tail -f`, only alerts that arrive from now on (add --from-beginning to print\n"
        "the existing ones first). Reads by assignment, so it never moves a worker's offsets.",
        _KAFKA,
    )
    alerts.add_argument("--follow", "-f", action="store_true", help="keep waiting for new alerts")
    alerts.add_argument(
        "--from-beginning", action="store_true", help="with --follow, print the existing alerts first"
    )
    alerts.add_argument("--json", action="store_true", help="one JSON object per line")
    alerts.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="this many alerts: the earliest by as_of (with --follow: the first read). Without --follow "
        "the alerts are sorted, so they print once the topic is read to its end",
    )

    sim = command(
        "simulate",
        "write a simulated business's events with ground truth",
        "Write orders.jsonl, support_tickets.jsonl, customer_profiles.jsonl and the ground truth\n"
        "(truth.jsonl, manifest.json) of a simulated shop to --out. Needs neither Kafka nor Redis.",
    )
    sim.add_argument("--customers", type=_positive_int, required=True)
    sim.add_argument("--days", type=_positive_int, required=True)
    sim.add_argument("--seed", type=int, required=True)
    sim.add_argument("--out", required=True)
    sim.add_argument("--drift-at", type=int, default=None, help="day from which the world shifts")
    sim.add_argument(
        "--drift-kind",
        choices=("both", "inputs", "link", "loyalty"),
        default="both",
        help="what shifts at --drift-at: both (default); inputs (amounts, ticket rates) alone; link "
        "(the ticket-to-churn relation) alone; or loyalty (frequent buyers start to leave)",
    )
    sim.add_argument(
        "--link-factor",
        type=float,
        default=None,
        help="what the ticket-to-churn link is multiplied by at --drift-at (default 0.25; negative: "
        "tickets then keep customers); with --drift-kind link, the rest (1 - factor) of its hazard "
        "follows ticket outcomes the features do not show",
    )
    sim.add_argument("--start", default=None, help="event time of day 0 (default 2024-01-01T00:00:00Z)")

    dataset = command(
        "dataset",
        "prepare a real data set as contract events",
        "Write the real CDNOW order log as orders.jsonl, plus simulated support tickets and profiles for\n"
        "the same customers, to --out. Needs neither Kafka nor Redis.",
    )
    dataset.add_argument("name", choices=["cdnow"])
    dataset.add_argument("--out", required=True)
    dataset.add_argument("--seed", type=int, default=7, help="seed of the simulated tickets")
    dataset.add_argument(
        "--tickets",
        choices=["simulated", "none"],
        default="simulated",
        help="simulated support tickets (default), or none: the real orders alone",
    )

    feats = command(
        "features",
        "print a customer's online features as JSON",
        "Print CUSTOMER_ID's features as the scorers keep them in Redis, as of --as-of (default: the\n"
        "event time the customer's partition has reached, as for the HTTP API). Exits 1 for an unknown\n"
        "customer.",
        f"{_REDIS}, CHURN_TOPIC_PREFIX (the namespace of the Redis keys)",
    )
    feats.add_argument("customer_id")
    feats.add_argument(
        "--as-of", default=None, help="RFC 3339 time or epoch ms (default: the partition's event time)"
    )

    model_dir_help = "model registry directory (default CHURN_MODEL_DIR)"
    train = command(
        "train",
        "train and register the batch model from event files",
        "Train the batch model from the event files in --events, or from the input topics themselves\n"
        "with --from-topics (point-in-time correct: features as of each cutoff use only earlier events),\n"
        "compare it with its baselines on held-out time, register it in the model registry and, unless\n"
        "--no-promote, make it the current model.",
        f"{_MODELS}: the registry (or --model-dir); CHURN_HORIZON_DAYS: the churn horizon",
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", help="directory with orders.jsonl, support_tickets.jsonl")
    source.add_argument(
        "--from-topics",
        action="store_true",
        help="read the input topics (to their current ends) instead of files; needs "
        "CHURN_KAFKA_BOOTSTRAP, CHURN_TOPIC_PREFIX",
    )
    train.add_argument("--out", "--model-dir", dest="model_dir", default=None, help=model_dir_help)
    train.add_argument("--since", default=None, help="with --from-topics: only events at or after this time")
    train.add_argument("--until", default=None, help="use only events before this time (RFC 3339)")
    train.add_argument("--no-promote", action="store_true", help="register without making it current")

    models = command(
        "models",
        "list, show, promote, shadow or roll back model versions",
        "Manage the model registry: list the versions (champion, shadow, evidence), show one (default: the\n"
        "current one), promote a version to current, roll back to the previous current one, or put a\n"
        "version in shadow (scored beside the current one on every prediction, deciding nothing; --clear\n"
        "empties the slot). Promoting the version in shadow shows the evidence read from churn_outcomes\n"
        "and refuses a shadow that scored worse unless --force. Workers pick up a change within\n"
        "CHURN_MODEL_POLL_SECONDS.",
        f"{_MODELS}: the registry (or --model-dir); {_KAFKA} (the evidence)",
    )
    models.add_argument("action", choices=["list", "promote", "rollback", "show", "shadow"])
    models.add_argument("version", nargs="?")
    models.add_argument("--clear", action="store_true", help="with shadow: no model in shadow")
    models.add_argument("--force", action="store_true", help="with promote: promote despite worse evidence")
    models.add_argument(
        "--no-evidence", action="store_true", help="with promote: do not read churn_outcomes for evidence"
    )
    models.add_argument("--model-dir", "--out", dest="model_dir", default=None, help=model_dir_help)
    models.add_argument("--dir", dest="model_dir", default=None, help=argparse.SUPPRESS)  # its old name

    retrain = command(
        "retrain",
        "train a candidate from the topics and put it in shadow",
        "Close the loop: train from the input topics (as `train --from-topics`), register the model\n"
        "without promoting it, and put it in shadow, so the workers score every prediction with it and the\n"
        "monitor gathers evidence; promote it with `churnstream models promote VERSION` (or by\n"
        "CHURN_AUTO_PROMOTE_MARGIN). Runs on demand, from cron, or from the monitor\n"
        "(CHURN_RETRAIN_ON_ADVICE).",
        f"{_KAFKA}; {_MODELS}: the registry (or --model-dir); CHURN_HORIZON_DAYS",
    )
    retrain.add_argument("--model-dir", "--out", dest="model_dir", default=None, help=model_dir_help)
    retrain.add_argument("--since", default=None, help="only events at or after this time (RFC 3339)")
    retrain.add_argument("--until", default=None, help="only events before this time (RFC 3339)")
    retrain.add_argument(
        "--replace-shadow",
        action="store_true",
        help="take the place of the model in shadow (without it, a retrain refuses while one is there)",
    )

    command(
        "score",
        "run the scoring worker until SIGTERM/SIGINT",
        "Run one scoring worker, a member of the scorers' consumer group: it reads the input topics,\n"
        "keeps every customer's features in Redis, scores customers on their events and on event-time\n"
        "sweeps, learns from labels as they become known, and writes churn_predictions, churn_alerts,\n"
        "churn_outcomes and dead_letter. Start more processes to share the partitions.",
        _KAFKA,
        f"{_REDIS}; {_MODELS}: the current model (the worker waits for one)",
        "CHURN_CONSUMER_GROUP (default <prefix>churnstream-scorer), CHURN_BATCH_SIZE, CHURN_BATCH_TIMEOUT_MS",
        "CHURN_WORKER_ID (default: the host name; distinct per worker of a group on one host),",
        "CHURN_SESSION_TIMEOUT_MS (default 10000): a restarted worker takes its partitions back at once",
        "CHURN_HORIZON_DAYS, CHURN_HIGH_THRESHOLD, CHURN_MEDIUM_THRESHOLD (unset: the model's own)",
        "CHURN_ALERT_POLICY (value_at_risk | high_risk), CHURN_ALERT_BUDGET_SHARE (0.1 of the active",
        "customers a month), CHURN_ALERT_HOLDOUT_SHARE (0), CHURN_ALERT_COOLDOWN_DAYS",
        "CHURN_SWEEP_INTERVAL_DAYS, CHURN_SWEEP_MILESTONES_DAYS, CHURN_SWEEP_MAX_SILENCE_DAYS",
        "CHURN_ALLOWED_LATENESS_DAYS, CHURN_MAX_FUTURE_SKEW_HOURS (which events are late or too far ahead)",
        "CHURN_MODEL_POLL_SECONDS (how often a new current model is looked for), CHURN_TOPIC_PARTITIONS",
        "port: /metrics, /health, /ready on CHURN_WEB_HOST:CHURN_METRICS_PORT (default 127.0.0.1:9108)",
    )
    command(
        "monitor",
        "run the drift monitor until SIGTERM/SIGINT",
        "Run the drift monitor: it reads what the scorers predicted and learned, closes a window every\n"
        "CHURN_DRIFT_WINDOW_ROWS predictions (or CHURN_DRIFT_WINDOW_DAYS of event time), compares it with\n"
        "the model's reference data with Evidently, and writes drift_reports plus an HTML report per\n"
        "window under CHURN_REPORT_DIR.",
        _KAFKA,
        f"{_MODELS}: the reference data of each model version; CHURN_REPORT_DIR: the reports",
        "CHURN_DRIFT_WINDOW_ROWS, CHURN_DRIFT_WINDOW_DAYS, CHURN_DRIFT_SHARE",
        "CHURN_MONITOR_AUC_DROP_WATCH, CHURN_MONITOR_AUC_DROP_RETRAIN (the verdict), "
        "CHURN_MONITOR_MIN_LABELS, CHURN_HORIZON_DAYS + CHURN_ALLOWED_LATENESS_DAYS (when a window's labels "
        "are all known)",
        "CHURN_AUTO_PROMOTE_MARGIN, CHURN_AUTO_PROMOTE_MIN_LABELS (promote or roll back a shadow model),",
        "CHURN_RETRAIN_ON_ADVICE (run `churnstream retrain` when the advice is retrain),",
        "CHURN_PUBLIC_URL (the base of the links in reports and on the pages)",
        "port: pages, /metrics, /health and /ready on CHURN_WEB_HOST:CHURN_WEB_PORT (default 127.0.0.1:8088)",
    )
    serve = command(
        "serve",
        "run the HTTP API until SIGTERM/SIGINT",
        "Answer HTTP requests about customers from the state the scorers keep in Redis and the model\n"
        "registry: GET /customers/ID (features, latest prediction), POST /customers/ID/score and\n"
        "POST /score (fresh predictions), /health, /ready, /metrics; OpenAPI docs on /docs. Reads only.\n"
        "Without CHURN_API_TOKEN it refuses a non-loopback CHURN_API_HOST unless --allow-unauthenticated.",
        f"{_REDIS}, CHURN_TOPIC_PREFIX (the namespace of the Redis keys); {_MODELS}",
        "CHURN_API_TOKEN: bearer token required on every request but /health, /ready, /metrics, /docs",
        "CHURN_API_THREADS (default 8), CHURN_API_MAX_CONNECTIONS (default 256), CHURN_API_MAX_BATCH "
        "(default 1000)",
        "CHURN_MODEL_POLL_SECONDS: how often a promoted model and the online learners are picked up",
        f"{_KAFKA}: checked by /ready",
        "port: CHURN_API_HOST:CHURN_API_PORT (default 127.0.0.1:8080)",
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback CHURN_API_HOST without CHURN_API_TOKEN (something else guards it)",
    )

    forget = command(
        "forget",
        "remove what the service keeps about a customer",
        "Remove CUSTOMER_ID's state from Redis (features, event ids, pending predictions, risk, alert\n"
        "cooldown) and say what remains in Kafka topics until their retention expires. A later event of\n"
        "the customer starts from nothing. Safe while scorers run. Exits 1 when nothing was kept.",
        f"{_REDIS}, CHURN_TOPIC_PREFIX (the namespace of the Redis keys)",
    )
    forget.add_argument("customer_id")
    forget.add_argument("--json", action="store_true", help="print what was done as JSON")

    report = command(
        "report",
        "print the daily report",
        "Per day of event time: predictions by trigger and risk, predicted churn rate, alerts with their\n"
        "value at risk, outcomes labelled and realized ROC-AUC so far, dead letters by stage, scoring\n"
        "latency p50/p95/p99; read from the output topics (and the inputs' timestamps). Exits 1 when\n"
        "--day names a day with nothing in it.",
        _KAFKA,
    )
    report.add_argument("--day", type=_day, default=None, help="only this day, YYYY-MM-DD (UTC)")
    report.add_argument("--json", action="store_true", help="print the records as JSON")

    rebuild = command(
        "rebuild",
        "rebuild Redis state by replaying the input topics",
        "Clear this deployment's Redis state (keys under CHURN_TOPIC_PREFIX) and rebuild every customer's\n"
        "features by replaying the input topics from their beginning. Stop the scorers first.",
        _KAFKA,
        f"{_REDIS}; {_MODELS}: the current model (replayed as the scorers would score)",
        "CHURN_HORIZON_DAYS, CHURN_ALLOWED_LATENESS_DAYS, CHURN_MAX_FUTURE_SKEW_HOURS,",
        "CHURN_SWEEP_INTERVAL_DAYS, CHURN_SWEEP_MILESTONES_DAYS, CHURN_SWEEP_MAX_SILENCE_DAYS:",
        "the scorers' values, so the rebuilt state is the one they would have written",
    )
    rebuild.add_argument("--yes", action="store_true", help="do not ask before clearing state")

    demo = command(
        "demo",
        "the whole story on one machine, end to end",
        "Play the real CDNOW customer base through the whole system: train, score the history, replay\n"
        "the held-out period through Kafka, monitor drift, and print a summary. Uses the Kafka and Redis\n"
        "at the configured addresses, starting local ones (development tooling) when none answers.",
        f"{_KAFKA}; topics get the prefix demo. unless --prefix",
        f"{_REDIS}; CHURN_VAR_DIR",
        "ports: the scorer's and monitor's HTTP ports (free ones near 9108 and 8088)",
    )
    demo.add_argument(
        "--customers", type=_positive_int, default=None, help="use only this many CDNOW customers"
    )
    demo.add_argument("--keep-running", action="store_true", help="leave Kafka and Redis running at the end")
    demo.add_argument(
        "--serve", action="store_true", help="after the summary, keep the workers up until Ctrl-C"
    )
    demo.add_argument("--train-until", default=None, help="train before this time (default 1997-10-01)")
    demo.add_argument("--replay-until", default=None, help="stop the replay at this time (default: the end)")
    demo.add_argument(
        "--drift-windows", type=_positive_int, default=None, help="drift windows to aim for (default 8)"
    )
    demo.add_argument(
        "--prefix",
        default=None,
        help="topic prefix of the demo, ending in '.' (default demo.); every topic, consumer group and "
        "Redis key under it is deleted at the start",
    )
    demo.add_argument(
        "--work-dir",
        default=None,
        help="the demo's directory (default var/demo), deleted at the start: a new or empty one, or a "
        "previous demo's",
    )

    schema = command(
        "schema",
        "print the JSON Schema of a topic's messages",
        "Print the JSON Schema (draft 2020-12) of one topic's messages, or of every topic as one JSON\n"
        "object keyed by topic. The schemas come from the definitions the code validates with.",
    )
    schema.add_argument("topic", nargs="?", help="a topic's base name, e.g. orders or churn_alerts")

    config = command(
        "config",
        "print the effective settings, secrets redacted",
        "Print every setting as the environment variable that sets it, its effective value (secrets as\n"
        "***) and whether it came from the environment or is the default.",
    )
    config.add_argument("--json", action="store_true", help="one JSON object")
    return parser


class _LibrdkafkaLog:
    """librdkafka's own log lines, demoted to DEBUG under ``churnstream.kafka``: the failures that matter
    reach the user as one error from the command, not as hundreds of ``%3|...|FAIL|`` lines."""

    def __init__(self) -> None:
        self._log = logging.getLogger("churnstream.kafka.librdkafka")

    def log(self, level: int, msg: str, *args: object) -> None:
        self._log.debug(msg, *args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings: Settings | None = None
    try:
        for warning in Settings.unknown_variables():
            log.warning("%s", warning)
        settings = Settings.from_env(kafka_logger=_LibrdkafkaLog())
        module_name, func_name = _HANDLERS[args.command].split(":")
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args, settings) or 0)
    except ConfigError as exc:
        print(f"churnstream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ChurnstreamError as exc:
        said = str(exc)
        if isinstance(exc, StoreError) and settings is not None and "CHURN_REDIS_URL" not in said:
            said += f" (Redis at {settings.redacted_redis_url}, set by CHURN_REDIS_URL)"
        print(f"churnstream {args.command}: error: {said}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`churnstream alerts | head`): done, not an error
        with contextlib.suppress(OSError, ValueError, AttributeError):  # and no second error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        refused = kafka_config_refused(exc)
        if refused is None:
            raise
        print(f"churnstream {args.command}: error: {refused}", file=sys.stderr)
        return 2


def kafka_config_refused(exc: BaseException) -> str | None:
    """What to tell a user whose ``CHURN_KAFKA_*`` properties librdkafka refused (an unknown name, a value
    it does not take), naming the variable; None for any other error.

    >>> from confluent_kafka import KafkaError, KafkaException
    >>> refusal = KafkaError(KafkaError._INVALID_ARG, 'No such configuration property: "bootstrap.server"')
    >>> said = kafka_config_refused(KafkaException(refusal))
    >>> said[:69], "(set by CHURN_KAFKA_BOOTSTRAP_SERVER;" in said
    ('Kafka refused a client property: No such configuration property: "boo', True)
    >>> kafka_config_refused(ValueError("x")) is None
    True
    """
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return None
    error = exc.args[0]
    if error.code() != KafkaError._INVALID_ARG:
        return None
    named = re.search(r'property:? "([a-z0-9._]+)"', error.str())
    source = f"set by {KAFKA_PREFIX}{named.group(1).upper().replace('.', '_')}; " if named else ""
    return (
        f"Kafka refused a client property: {error.str()} ({source}every {KAFKA_PREFIX}* variable is passed "
        f"to librdkafka as a property, e.g. {KAFKA_PREFIX}SECURITY_PROTOCOL -> security.protocol)"
    )


if __name__ == "__main__":
    sys.exit(main())
