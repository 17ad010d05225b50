"""How :class:`~churnstream.settings.Settings` are read from ``CHURN_*`` variables, checked, shown with
their secrets hidden, and written back for a child process.

Private: :mod:`churnstream.settings` is the one place settings are defined (their fields, defaults and
variables) and the only user of this module; its methods with the same names are the public surface.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from churnstream.errors import ConfigError

if TYPE_CHECKING:
    from churnstream.settings import Settings

SECRET_WORDS = ("password", "secret", "key", "token", "jaas")
# What Kafka accepts in a group.instance.id (the scorer's is "<group>-<worker id>"), with room for the group.
WORKER_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
TOPIC_PREFIX = re.compile(r"[A-Za-z0-9._-]{0,200}")
KAFKA_PREFIX = "CHURN_KAFKA_"  # CHURN_KAFKA_<PROPERTY>: librdkafka properties, dots written as underscores
_NOT_PROPERTIES = {"CHURN_KAFKA_BOOTSTRAP"}
_POSITIVE = (
    "horizon_days",
    "drift_window_rows",
    "drift_window_days",
    "batch_size",
    "topic_partitions",
    "sweep_interval_days",
    "session_timeout_ms",
    "api_threads",
    "api_max_connections",
    "api_max_batch",
    "batch_timeout_ms",  # 0: an idle worker polls without waiting (a core at 100 %)
    "model_poll_seconds",  # 0: the API and a waiting scorer reload the registry and learners non-stop
    "sweep_max_silence_days",
    "monitor_min_labels",
    "auto_promote_min_labels",
)
_NOT_NEGATIVE = (
    "alert_cooldown_days",
    "allowed_lateness_days",
    "max_future_skew_hours",
    "state_cache_customers",  # 0: no cache
    "state_cache_decoded_customers",
)


def is_secret(prop: str) -> bool:
    return any(word in prop for word in SECRET_WORDS)


def redact_url(url: str) -> str:
    """``url`` without its password, in the user part or in a query argument (redis-py reads both).

    >>> redact_url("rediss://app:s3cret@db:6380/0?password=s3cret&ssl_cert_reqs=required")
    'rediss://app:***@db:6380/0?password=***&ssl_cert_reqs=required'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = netloc.rpartition("@")[2]
        netloc = f"{parts.username or ''}:***@{host}"
    query = "&".join(
        f"{arg.partition('=')[0]}=***" if is_secret(unquote(arg.partition("=")[0]).lower()) else arg
        for arg in parts.query.split("&")
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def read_env(cls: type[Settings], env: Mapping[str, str]) -> dict[str, Any]:
    """The constructor arguments ``env`` sets: each variable of ``cls._ENV`` as its field's type (empty
    means unset, except for the topic prefix), and the ``CHURN_KAFKA_<PROPERTY>`` variables as
    ``kafka_properties``."""
    types = {f.name: f.type for f in fields(cls)}
    values: dict[str, Any] = {}
    for name, var in cls._ENV.items():
        raw = env.get(var)
        if raw is None or raw == "" and name != "topic_prefix":
            continue
        values[name] = _convert(var, raw, str(types[name]))
    props = {
        var[len(KAFKA_PREFIX) :].lower().replace("_", "."): value
        for var, value in env.items()
        if var.startswith(KAFKA_PREFIX) and var not in _NOT_PROPERTIES
    }
    if props:
        values["kafka_properties"] = props
    return values


def _convert(var: str, raw: str, type_name: str) -> Any:
    try:
        if "float" in type_name:
            value = float(raw)
            if not math.isfinite(value):  # "nan", "inf": a duration or share nothing can be computed with
                raise ConfigError(f"{var}={raw!r} is not a finite number")
            return value
        if "int" in type_name:
            return int(raw)
        if "Path" in type_name:
            return Path(raw)
    except ValueError as exc:
        raise ConfigError(f"{var}={raw!r} is not a valid {type_name.split('|')[0].strip()}") from exc
    return raw


def unknown_variables(known: Iterable[str], env: Mapping[str, str]) -> list[str]:
    """A warning for each ``CHURN_*`` variable of ``env`` not in ``known`` (Kafka properties aside)."""
    known = set(known)
    warnings = []
    for var in sorted(env):
        if not var.startswith("CHURN_") or var in known or var.startswith(KAFKA_PREFIX):
            continue
        close = difflib.get_close_matches(var, sorted(known), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else "; `churnstream config` lists the settings"
        warnings.append(f"{var} is not a churnstream setting and is ignored{hint}")
    return warnings


def effective(settings: Settings, env: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(variable, value, source)`` of every setting, secrets as ``***`` (see ``Settings.effective``)."""
    rows = []
    for name, var in settings._ENV.items():
        if name == "redis_url":
            value = settings.redacted_redis_url
        elif name == "worker_id":
            value = settings.worker_name
        elif name == "scorer_group":  # the group the scorers join, as they log it
            value = settings.consumer_group
        elif name == "api_token":
            value = "***" if settings.api_token else ""
        elif getattr(settings, name) is None:
            value = "(unset)"
        else:
            value = str(getattr(settings, name))
        rows.append((var, value, "env" if env.get(var) not in (None, "") else "default"))
    for prop, value in sorted(settings.kafka_properties.items()):
        var = KAFKA_PREFIX + prop.upper().replace(".", "_")
        rows.append((var, "***" if is_secret(prop) else str(value), "env"))
    return rows


def check(s: Settings) -> None:
    """Raise :class:`ConfigError` for settings that cannot work together (see ``Settings.check``)."""
    # one set alone pairs with the model's own other threshold (medium is capped at high where they meet:
    # Settings.risk_thresholds); a model's own thresholds are checked at training
    for var, value in (
        ("CHURN_HIGH_THRESHOLD", s.high_threshold),
        ("CHURN_MEDIUM_THRESHOLD", s.medium_threshold),
    ):
        if value is not None and not 0.0 < value <= 1.0:
            raise ConfigError(f"{var} must be in (0, 1], got {value}")
    if (
        s.high_threshold is not None
        and s.medium_threshold is not None
        and s.medium_threshold > s.high_threshold
    ):
        raise ConfigError(
            f"CHURN_MEDIUM_THRESHOLD ({s.medium_threshold}) must not be above CHURN_HIGH_THRESHOLD "
            f"({s.high_threshold})"
        )
    if s.alert_policy not in ("value_at_risk", "high_risk"):
        raise ConfigError(f"CHURN_ALERT_POLICY must be value_at_risk or high_risk, got {s.alert_policy!r}")
    if not 0.0 < s.alert_budget_share <= 1.0:
        raise ConfigError(f"CHURN_ALERT_BUDGET_SHARE must be in (0, 1], got {s.alert_budget_share}")
    if not 0.0 <= s.alert_holdout_share < 1.0:
        raise ConfigError(f"CHURN_ALERT_HOLDOUT_SHARE must be in [0, 1), got {s.alert_holdout_share}")
    for name in _POSITIVE:
        if getattr(s, name) <= 0:
            raise ConfigError(f"{s._ENV[name]} must be positive, got {getattr(s, name)}")
    for name in _NOT_NEGATIVE:
        if getattr(s, name) < 0:
            raise ConfigError(f"{s._ENV[name]} must not be negative, got {getattr(s, name)}")
    if s.retrain_on_advice not in (0, 1):
        raise ConfigError(f"CHURN_RETRAIN_ON_ADVICE must be 0 or 1, got {s.retrain_on_advice}")
    if not s.sweep_milestones_ms:  # parsed now: a malformed list is a configuration error at start
        raise ConfigError(
            f"CHURN_SWEEP_MILESTONES_DAYS ({s.sweep_milestones_days!r}) names no silence in (0, "
            f"CHURN_SWEEP_MAX_SILENCE_DAYS={s.sweep_max_silence_days:g}] days: silent customers would never "
            "be rescored"
        )
    if s.auto_promote_margin is not None and not 0.0 <= s.auto_promote_margin < 1.0:
        raise ConfigError(
            f"CHURN_AUTO_PROMOTE_MARGIN must be in [0, 1) (a ROC-AUC gain), got {s.auto_promote_margin}: "
            "below 0 a shadow worse than the current model would be promoted"
        )
    watch, retrain = s.monitor_auc_drop_watch, s.monitor_auc_drop_retrain
    if not 0.0 <= watch <= retrain < 1.0:
        raise ConfigError(
            f"CHURN_MONITOR_AUC_DROP_WATCH ({watch}) and CHURN_MONITOR_AUC_DROP_RETRAIN ({retrain}) are "
            "ROC-AUC drops with 0 <= watch <= retrain < 1"
        )
    if not 0.0 < s.drift_share <= 1.0:
        raise ConfigError(f"CHURN_DRIFT_SHARE must be in (0, 1], got {s.drift_share}")
    # Extension: redis+cluster:// and rediss+cluster:// name any node of a Redis Cluster
    if not s.redis_url.startswith(
        ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
    ):
        raise ConfigError(
            "CHURN_REDIS_URL must start with redis://, rediss://, unix://, redis+cluster:// or "
            f"rediss+cluster://: {s.redacted_redis_url}"
        )
    if s.public_url and not s.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"CHURN_PUBLIC_URL must be an http:// or https:// URL, got {s.public_url!r}")
    if not 0 <= s.api_port <= 65535:
        raise ConfigError(f"CHURN_API_PORT must be a TCP port (0..65535), got {s.api_port}")
    if not 0 <= s.web_port <= 65535:
        raise ConfigError(f"CHURN_WEB_PORT must be a TCP port (0..65535), got {s.web_port}")
    if s.web_port == 0 and not s.public_url:
        raise ConfigError(
            "CHURN_WEB_PORT=0 (any free port) needs CHURN_PUBLIC_URL: drift reports link to the monitor's "
            "pages, and a port chosen at start cannot be linked to"
        )
    if not -1 <= s.metrics_port <= 65535:
        raise ConfigError(
            f"CHURN_METRICS_PORT must be a TCP port (0..65535) or -1 (off), got {s.metrics_port}"
        )
    if not TOPIC_PREFIX.fullmatch(s.topic_prefix):  # Kafka's rule for topic names; its longest is 249
        raise ConfigError(
            "CHURN_TOPIC_PREFIX may hold only letters, digits, '.', '_' and '-' (at most 200), as Kafka "
            f"topic names do, got {s.topic_prefix!r}"
        )
    if s.worker_id and not WORKER_ID.fullmatch(s.worker_id):
        raise ConfigError(
            "CHURN_WORKER_ID may hold only letters, digits, '.', '_' and '-' (at most 128), "
            f"got {s.worker_id!r}"
        )


def redact(settings: Settings, text: str) -> str:
    """``text`` with every secret of ``settings`` replaced by ``***`` (see ``Settings.redact``)."""
    secrets = {v for k, v in settings.kafka_properties.items() if is_secret(k) and v}
    if settings.api_token:
        secrets.add(settings.api_token)
    parts = urlsplit(settings.redis_url)
    if parts.password:
        secrets |= {parts.password, unquote(parts.password)}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(str(secret), "***")
    return text


def to_env(settings: Settings) -> dict[str, str]:
    """The ``CHURN_*`` variables that rebuild ``settings`` (see ``Settings.to_env``)."""
    env = {
        var: str(getattr(settings, name))
        for name, var in settings._ENV.items()
        if getattr(settings, name) is not None  # unset: the child reads it unset too
    }
    for prop, value in settings.kafka_properties.items():
        env[KAFKA_PREFIX + prop.upper().replace(".", "_")] = str(value)
    return env


def describe(settings: Settings) -> str:
    """``Settings(...)`` with every field but the Kafka logger, secrets as ``***``."""
    shown = []
    for f in fields(settings):
        if f.name == "kafka_logger":
            continue
        value: Any = getattr(settings, f.name)
        if f.name == "redis_url":
            value = settings.redacted_redis_url
        elif f.name == "api_token":
            value = "***" if value else ""
        elif f.name == "kafka_properties":
            value = {k: ("***" if is_secret(k) else v) for k, v in value.items()}
        shown.append(f"{f.name}={value!r}")
    return f"Settings({', '.join(shown)})"
