"""The one place settings are read: environment variables named ``CHURN_*``.

Every variable of the contract has a field here. Kafka client properties pass through as
``CHURN_KAFKA_<PROPERTY>`` with dots written as underscores, e.g. ``CHURN_KAFKA_SECURITY_PROTOCOL=SASL_SSL``
becomes ``security.protocol``; ``CHURN_KAFKA_BOOTSTRAP`` is the bootstrap list. Redis credentials and
TLS come through ``CHURN_REDIS_URL`` (``rediss://user:pass@host:6379/0``). Settings are defined here
(fields, defaults, variables); how they are read, checked and redacted is the private ``_settings_env``.

>>> s = Settings.from_env({"CHURN_TOPIC_PREFIX": "prod.", "CHURN_KAFKA_SASL_PASSWORD": "hunter2"})
>>> s.topics.orders
'prod.orders'
>>> "hunter2" in repr(s)
False
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnstream import _settings_env as env_vars
from churnstream.errors import ConfigError

DAY_MS = 86_400_000
LEARNER_HISTORY_MOST = 1000  # learner states a partition keeps at most (see Settings.learner_history_kept)


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of the contract, with the configured prefix applied."""

    prefix: str = ""

    def _name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def orders(self) -> str:
        return self._name("orders")

    @property
    def support_tickets(self) -> str:
        return self._name("support_tickets")

    @property
    def customer_profiles(self) -> str:
        return self._name("customer_profiles")

    @property
    def churn_labels(self) -> str:
        return self._name("churn_labels")

    @property
    def churn_predictions(self) -> str:
        return self._name("churn_predictions")

    @property
    def churn_alerts(self) -> str:
        return self._name("churn_alerts")

    @property
    def drift_reports(self) -> str:
        return self._name("drift_reports")

    @property
    def churn_outcomes(self) -> str:
        return self._name("churn_outcomes")

    @property
    def dead_letter(self) -> str:
        return self._name("dead_letter")

    @property
    def monitoring_batches(self) -> str:
        """Internal: one compact columnar record per scorer micro-batch, read by the monitor."""
        return self._name("churnstream.monitoring_batches")

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.orders, self.support_tickets, self.customer_profiles, self.churn_labels)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (
            self.churn_predictions,
            self.churn_alerts,
            self.drift_reports,
            self.churn_outcomes,
            self.dead_letter,
        )

    def kind_of(self, topic: str) -> str:
        """The contract's base name of a (prefixed) topic, e.g. ``prod.orders`` -> ``orders``."""
        if self.prefix and topic.startswith(self.prefix):
            return topic[len(self.prefix) :]
        return topic


@functools.lru_cache(maxsize=64)
def _topics(prefix: str) -> Topics:
    return Topics(prefix)


@dataclass(frozen=True, slots=True)
class Settings:
    """All settings of a churnstream process. Build it once in ``main()`` with :meth:`from_env`."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic_prefix: str = ""
    model_dir: Path = Path("var/models")
    report_dir: Path = Path("var/reports")
    horizon_days: float = 30.0
    high_threshold: float | None = None  # None: the model's own (chosen at training), else 0.7
    medium_threshold: float | None = None  # None: the model's own, else 0.4
    alert_cooldown_days: float = 7.0
    drift_window_rows: int = 5000
    max_future_skew_hours: float = 24.0
    # Extensions of the contract.
    allowed_lateness_days: float = 7.0
    batch_size: int = 500
    batch_timeout_ms: int = 20
    state_cache_customers: int = 200_000  # customer states a worker keeps in memory (least recent evicted)
    state_cache_decoded_customers: int = 20_000  # of those, kept decoded (no decode on the next batch)
    topic_partitions: int = 6
    scorer_group: str = ""  # empty: "<topic prefix>churnstream-scorer" (see consumer_group)
    metrics_port: int = 9108
    sweep_interval_days: float = 1.0
    sweep_milestones_days: str = "7,14,30,60,90,180,270,365"
    sweep_max_silence_days: float = 365.0
    model_poll_seconds: float = 10.0
    web_host: str = "127.0.0.1"
    web_port: int = 8088
    drift_share: float = 0.3
    var_dir: Path = Path("var")
    drift_window_days: float = 7.0
    # The monitor's verdict (``action`` of drift_reports, see churnstream.monitoring.performance.advise):
    # ROC-AUC drops below the reference that give ``watch`` and ``retrain``, and the labels a window needs
    # before its realized ROC-AUC is reported.
    monitor_auc_drop_watch: float = 0.03
    monitor_auc_drop_retrain: float = 0.05
    monitor_min_labels: int = 100
    public_url: str = ""  # empty: the monitor's own address (see pages_url)
    worker_id: str = ""  # empty: this host's name (see worker_name)
    session_timeout_ms: int = 10_000
    # The HTTP API (``churnstream serve``): address, optional bearer token, bounded pool, request limits.
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_token: str = ""  # empty: no authentication, and then only a loopback host is served by default
    api_threads: int = 8  # threads answering requests (each holds at most one Redis connection)
    api_max_connections: int = 256  # requests in progress at most; more are answered 503 at once
    api_max_batch: int = 1000  # customers per POST /score at most; more: 413
    alert_policy: str = "value_at_risk"  # or "high_risk" (see churnstream.models.alert_policy)
    alert_budget_share: float = 0.1  # at most this share of the active customers alerted per month
    alert_holdout_share: float = 0.0  # this share of picked customers held back as a control group
    # Closing the loop (#24, churnstream.streams.retrain): the monitor promotes the model in shadow when its
    # realized ROC-AUC beats the current one's by at least the margin (the whole bootstrap interval of the
    # difference above it) over at least that many labels, and rolls back the same way; unset: never.
    auto_promote_margin: float | None = None
    auto_promote_min_labels: int = 1000
    retrain_on_advice: int = 0  # 1: the monitor runs `churnstream retrain` (one at a time) on `retrain`
    kafka_properties: Mapping[str, str] = field(default_factory=dict)
    # Not a setting users make: where librdkafka's own log lines go (``logger`` of every Kafka client).
    kafka_logger: Any = field(default=None, compare=False)

    _ENV = {
        "kafka_bootstrap": "CHURN_KAFKA_BOOTSTRAP",
        "redis_url": "CHURN_REDIS_URL",
        "topic_prefix": "CHURN_TOPIC_PREFIX",
        "model_dir": "CHURN_MODEL_DIR",
        "report_dir": "CHURN_REPORT_DIR",
        "horizon_days": "CHURN_HORIZON_DAYS",
        "high_threshold": "CHURN_HIGH_THRESHOLD",
        "medium_threshold": "CHURN_MEDIUM_THRESHOLD",
        "alert_cooldown_days": "CHURN_ALERT_COOLDOWN_DAYS",
        "alert_policy": "CHURN_ALERT_POLICY",
        "alert_budget_share": "CHURN_ALERT_BUDGET_SHARE",
        "alert_holdout_share": "CHURN_ALERT_HOLDOUT_SHARE",
        "drift_window_rows": "CHURN_DRIFT_WINDOW_ROWS",
        "max_future_skew_hours": "CHURN_MAX_FUTURE_SKEW_HOURS",
        "allowed_lateness_days": "CHURN_ALLOWED_LATENESS_DAYS",
        "batch_size": "CHURN_BATCH_SIZE",
        "state_cache_customers": "CHURN_STATE_CACHE_CUSTOMERS",
        "state_cache_decoded_customers": "CHURN_STATE_CACHE_DECODED_CUSTOMERS",
        "batch_timeout_ms": "CHURN_BATCH_TIMEOUT_MS",
        "topic_partitions": "CHURN_TOPIC_PARTITIONS",
        "scorer_group": "CHURN_CONSUMER_GROUP",
        "metrics_port": "CHURN_METRICS_PORT",
        "sweep_interval_days": "CHURN_SWEEP_INTERVAL_DAYS",
        "sweep_milestones_days": "CHURN_SWEEP_MILESTONES_DAYS",
        "sweep_max_silence_days": "CHURN_SWEEP_MAX_SILENCE_DAYS",
        "model_poll_seconds": "CHURN_MODEL_POLL_SECONDS",
        "web_host": "CHURN_WEB_HOST",
        "web_port": "CHURN_WEB_PORT",
        "drift_share": "CHURN_DRIFT_SHARE",
        "var_dir": "CHURN_VAR_DIR",
        "drift_window_days": "CHURN_DRIFT_WINDOW_DAYS",
        "monitor_auc_drop_watch": "CHURN_MONITOR_AUC_DROP_WATCH",
        "monitor_auc_drop_retrain": "CHURN_MONITOR_AUC_DROP_RETRAIN",
        "monitor_min_labels": "CHURN_MONITOR_MIN_LABELS",
        "public_url": "CHURN_PUBLIC_URL",
        "worker_id": "CHURN_WORKER_ID",
        "session_timeout_ms": "CHURN_SESSION_TIMEOUT_MS",
        "api_host": "CHURN_API_HOST",
        "api_port": "CHURN_API_PORT",
        "api_token": "CHURN_API_TOKEN",
        "api_threads": "CHURN_API_THREADS",
        "api_max_connections": "CHURN_API_MAX_CONNECTIONS",
        "api_max_batch": "CHURN_API_MAX_BATCH",
        "auto_promote_margin": "CHURN_AUTO_PROMOTE_MARGIN",
        "auto_promote_min_labels": "CHURN_AUTO_PROMOTE_MIN_LABELS",
        "retrain_on_advice": "CHURN_RETRAIN_ON_ADVICE",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``environ`` (default: the process environment); ``overrides`` win."""
        values = env_vars.read_env(cls, os.environ if environ is None else environ)
        values.update(overrides)
        settings = cls(**values)
        settings.check()
        return settings

    @classmethod
    def unknown_variables(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """A warning for each ``CHURN_*`` variable that no setting reads (a typo is otherwise silent).

        ``CHURN_KAFKA_<PROPERTY>`` variables pass through to librdkafka, which rejects unknown properties
        itself when a client is built, so they are not checked here.

        >>> Settings.unknown_variables({"CHURN_HORIZON_DAY": "90", "CHURN_KAFKA_ACKS": "all"})
        ['CHURN_HORIZON_DAY is not a churnstream setting and is ignored; did you mean CHURN_HORIZON_DAYS?']
        """
        return env_vars.unknown_variables(cls._ENV.values(), os.environ if environ is None else environ)

    def effective(self, environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
        """``(variable, value, source)`` of every setting, secrets as ``***``; source is ``env`` or
        ``default``.

        >>> Settings.from_env({"CHURN_HORIZON_DAYS": "90"}).effective({"CHURN_HORIZON_DAYS": "90"})[5]
        ('CHURN_HORIZON_DAYS', '90.0', 'env')
        """
        return env_vars.effective(self, os.environ if environ is None else environ)

    def check(self) -> None:
        """Raise :class:`ConfigError` for settings that cannot work together."""
        env_vars.check(self)

    @property
    def learner_history_kept(self) -> int:
        """How many past states of each partition's online learner the store keeps (one at most per sweep
        tick), so the HTTP API scores a past ``as_of`` with the online part the stream had then: the
        ticks of the longest silence swept plus a horizon (after which that prediction's outcome is known),
        at most 1,000 (~2.6 MB a partition, however short the sweep interval).

        >>> Settings().learner_history_kept  # 365 days of silence + a 30-day horizon, a tick a day
        396
        """
        ticks = (self.sweep_max_silence_days + self.horizon_days) / max(self.sweep_interval_days, 1e-9)
        return min(math.ceil(ticks) + 1, LEARNER_HISTORY_MOST)

    @property
    def sweep_milestones_ms(self) -> tuple[int, ...]:
        """Silence lengths at which a silent customer is rescored, up to the maximum silence.

        >>> Settings(sweep_milestones_days="30, 7,400").sweep_milestones_ms == (7 * DAY_MS, 30 * DAY_MS)
        True
        """
        try:
            days = sorted({float(d) for d in self.sweep_milestones_days.split(",") if d.strip()})
        except ValueError:
            raise ConfigError(
                "CHURN_SWEEP_MILESTONES_DAYS must be comma-separated numbers of days: "
                f"{self.sweep_milestones_days!r}"
            ) from None
        return tuple(int(d * DAY_MS) for d in days if 0 < d <= self.sweep_max_silence_days)

    @property
    def consumer_group(self) -> str:
        """The scorers' consumer group: CHURN_CONSUMER_GROUP, by default per topic prefix.

        Deployments with different prefixes on one cluster then never share a group (a member joining
        one would stall the other's consumers in a rebalance).

        >>> Settings(topic_prefix="prod.").consumer_group, Settings(scorer_group="g").consumer_group
        ('prod.churnstream-scorer', 'g')
        """
        return self.scorer_group or f"{self.topic_prefix}churnstream-scorer"

    @property
    def pages_url(self) -> str:
        """Where users reach the monitor's pages, for links in messages: CHURN_PUBLIC_URL, else the monitor's
        own address (a wildcard host, which no browser can open, as 127.0.0.1).

        >>> Settings(web_host="0.0.0.0").pages_url, Settings(public_url="https://drift.example/").pages_url
        ('http://127.0.0.1:8088', 'https://drift.example')
        """
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.web_host in ("", "0.0.0.0", "::") else self.web_host
        return f"http://{host}:{self.web_port}"

    @property
    def worker_name(self) -> str:
        """This scorer's identity in its consumer group: CHURN_WORKER_ID, by default the host name.

        Stable across restarts on one host (a container keeps its host name through ``restart``, a
        systemd unit its machine's), so a restarted worker takes its partitions straight back; two
        workers on one host need distinct ids (see ``churnstream.streams.kafka.make_consumer``).

        >>> Settings(worker_id="scorer-2").worker_name
        'scorer-2'
        >>> env_vars.WORKER_ID.fullmatch(Settings().worker_name) is not None
        True
        """
        if self.worker_id:
            return self.worker_id
        host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:128].strip(".")
        return host or "worker"

    @property
    def topics(self) -> Topics:
        return _topics(self.topic_prefix)

    @property
    def horizon_ms(self) -> int:
        return int(self.horizon_days * DAY_MS)

    @property
    def cooldown_ms(self) -> int:
        return int(self.alert_cooldown_days * DAY_MS)

    @property
    def lateness_ms(self) -> int:
        return int(self.allowed_lateness_days * DAY_MS)

    @property
    def sweep_interval_ms(self) -> int:
        """The sweep ticks' spacing of event time: a tick is every multiple of it since the epoch."""
        return int(self.sweep_interval_days * DAY_MS)

    @property
    def redacted_redis_url(self) -> str:
        return env_vars.redact_url(self.redis_url)

    def redact(self, text: str) -> str:
        """``text`` with every secret of these settings (secret Kafka properties, the Redis password)
        replaced by ``***``: for messages that quote a client library's words.

        >>> s = Settings(kafka_properties={"sasl.password": "hunter2"}, redis_url="redis://:pw%40x@h/0")
        >>> s.redact("login with hunter2 failed; AUTH pw@x")
        'login with *** failed; AUTH ***'
        """
        return env_vars.redact(self, text)

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration: bootstrap, pass-through properties, then ``extra``."""
        config: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_logger is not None:
            config["logger"] = self.kafka_logger
        config.update(self.kafka_properties)
        config.update(extra)
        return config

    def to_env(self) -> dict[str, str]:
        """The ``CHURN_*`` variables that rebuild these settings in a child process (secrets included).

        >>> s = Settings(topic_prefix="demo.", kafka_properties={"security.protocol": "SSL"})
        >>> env = s.to_env()
        >>> env["CHURN_TOPIC_PREFIX"], env["CHURN_KAFKA_SECURITY_PROTOCOL"], Settings.from_env(env) == s
        ('demo.', 'SSL', True)
        """
        return env_vars.to_env(self)

    def risk_thresholds(self, model: Mapping[str, Any] | None = None) -> tuple[float, float]:
        """``(high, medium)``: each set explicitly wins, else the model's own (its metadata's
        ``risk_thresholds``, chosen at training), else the contract's 0.7 / 0.4.

        >>> Settings().risk_thresholds(), Settings().risk_thresholds({"high": 0.9, "medium": 0.8})
        ((0.7, 0.4), (0.9, 0.8))
        >>> Settings(high_threshold=0.95).risk_thresholds({"high": 0.9, "medium": 0.8})
        (0.95, 0.8)
        """
        model = model or {}
        high = self.high_threshold if self.high_threshold is not None else model.get("high", 0.7)
        medium = self.medium_threshold if self.medium_threshold is not None else model.get("medium", 0.4)
        return float(high), float(min(medium, high))

    def risk_category(self, probability: float, model: Mapping[str, Any] | None = None) -> str:
        """``HIGH`` / ``MEDIUM`` / ``LOW`` by :meth:`risk_thresholds` (``model``: the model's own).

        >>> Settings().risk_category(0.7), Settings().risk_category(0.69), Settings().risk_category(0.1)
        ('HIGH', 'MEDIUM', 'LOW')
        >>> Settings().risk_category(0.7, {"high": 0.9, "medium": 0.6})
        'MEDIUM'
        """
        high, medium = self.risk_thresholds(model)
        if probability >= high:
            return "HIGH"
        if probability >= medium:
            return "MEDIUM"
        return "LOW"

    def __repr__(self) -> str:
        return env_vars.describe(self)

    __str__ = __repr__


def cli(args: Any, settings: Settings) -> int:
    """``churnstream config [--json]``: the effective settings, secrets redacted."""
    rows = settings.effective()
    if args.json:
        print(json.dumps({var: value for var, value, _ in rows}, indent=2))
        return 0
    width = max(len(var) for var, _, _ in rows)
    for var, value, source in rows:
        print(f"{var:<{width}}  {value}{'  (default)' if source == 'default' else ''}")
    return 0


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child process that should run with ``settings``: this process's environment
    (PATH, locale, ...) without its ``CHURN_*`` variables, plus :meth:`Settings.to_env`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env.update(settings.to_env())
    return env
