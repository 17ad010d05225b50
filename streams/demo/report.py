"""The demo's findings: the output topics read back (:func:`read_outputs`), the summary printed from them
(:func:`print_summary`) and the held-out ROC-AUC of the batch, online and blended probabilities."""

from __future__ import annotations

import contextlib
import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from churnstream.errors import ChurnstreamError
from churnstream.events import format_time
from churnstream.models.evaluation import roc_auc
from churnstream.monitoring.ui import project_for
from churnstream.settings import Settings
from churnstream.streams.demo.config import DemoConfig, DemoResult


@dataclass(slots=True)
class Outputs:
    """What the summary shows beyond the counts of :class:`DemoResult`."""

    alerts: list[dict[str, Any]] = field(default_factory=list)  # the replayed period's top, by priority
    letters: list[dict[str, Any]] = field(default_factory=list)
    messages: int = 0  # read from every output topic
    value_at_risk: float = 0.0  # of every alert of the replayed period
    held_back: int = 0  # the replayed period's alerts held back as a control group


TOP_ALERTS = 50  # the replayed period's alerts kept for the summary's examples, the highest priority first


def read_outputs(settings: Settings, split: int, r: DemoResult) -> Outputs:
    """Read every output topic, count into ``r`` what it holds (the replayed period from ``split`` on
    apart) and compute the held-out ROC-AUC."""
    from churnstream.streams.alerts import read_topic

    topics = settings.topics
    split_text = format_time(split)
    count = 0
    for _key, value in read_topic(settings, topics.churn_predictions):
        p = orjson.loads(value or b"{}")
        count += 1
        r.predictions[p["trigger"]] += 1
        if p["as_of"] >= split_text:
            r.predictions_replay[p["trigger"]] += 1
    top: list[tuple[float, int, dict[str, Any]]] = []  # a heap of the TOP_ALERTS highest priorities
    at_risk = 0.0
    held = 0
    alerted: set[str] = set()
    for _key, value in read_topic(settings, topics.churn_alerts):
        a = orjson.loads(value or b"{}")
        r.alerts += 1
        alerted.add(a["customer_id"])
        count += 1
        if a["as_of"] >= split_text:
            r.alerts_replay += 1
            at_risk += float(a.get("value_at_risk") or 0.0)
            held += bool(a.get("holdout"))
            # ties: the alert read first wins, as a stable sort by priority would have it
            item = (float(a.get("priority") or 0.0), -r.alerts_replay, a)
            if len(top) < TOP_ALERTS:
                heapq.heappush(top, item)
            else:
                heapq.heappushpop(top, item)
    r.alerted_customers = len(alerted)
    letters: list[dict[str, Any]] = []
    for _key, value in read_topic(settings, topics.dead_letter):
        letters.append(orjson.loads(value or b"{}"))
        count += 1
    r.dead_letters = len(letters)
    for _key, value in read_topic(settings, topics.drift_reports):
        r.drift_reports.append(orjson.loads(value or b"{}"))
        count += 1
    outcomes: dict[str, tuple[int, float, float | None, float]] = {}
    for _key, value in read_topic(settings, topics.churn_outcomes):
        o = orjson.loads(value or b"{}")
        count += 1
        r.outcomes += 1
        if o["as_of"] >= split_text:
            outcomes[o["prediction_id"]] = (
                int(o["label"]),
                o["batch_probability"],
                o["online_probability"],
                o["churn_probability"],
            )
    r.auc, r.auc_rows = held_out_auc(list(outcomes.values()))
    alerts = [a for _, _, a in sorted(top, key=lambda item: item[:2], reverse=True)]
    return Outputs(alerts=alerts, letters=letters, messages=count, value_at_risk=at_risk, held_back=held)


def print_summary(
    say: Callable[[str], None], config: DemoConfig, s: Settings, r: DemoResult, outputs: Outputs
) -> None:
    """The summary at the end of the demo, one ``say`` per line."""
    split = config.train_until[:10]
    say("")
    say(
        f"Summary ({r.seconds:.0f} s; model {r.model_version} trained on events before {split}, "
        f"topics {s.topic_prefix}*)"
    )
    say(
        f"  events        {r.events_history + r.events_replay:,} published: "
        f"{r.events_history:,} history, "
        f"{r.events_replay:,} replayed; plus {r.broken_sent} broken messages"
    )
    say(
        f"  predictions   {sum(r.predictions.values()):,}: {r.predictions['event']:,} on events, "
        f"{r.predictions['sweep']:,} on sweeps of silent customers "
        f"(replayed period: {r.predictions_replay['event']:,} / {r.predictions_replay['sweep']:,})"
    )
    say(
        f"  outcomes      {r.outcomes:,} labels known "
        f"(no completed order within {s.horizon_days:g} days = churned)"
    )
    from churnstream.models.registry import ModelRegistry

    if r.model_version:  # a summary of topics alone (no model of its own) has no thresholds to name
        with contextlib.suppress(ChurnstreamError):
            say(f"  risk          {risk_line(s, ModelRegistry(s.model_dir).metadata(r.model_version))}")
    picked_by = _alerts_policy(outputs.alerts)
    say(f"  alerts        {r.alerts:,} for {r.alerted_customers:,} customers; {picked_by}")
    held = outputs.held_back
    say(
        f"{' ' * 16}{r.alerts_replay:,} in the replayed period, value at risk {outputs.value_at_risk:,.2f}"
        f"{f', {held} held back as a control group' if held else ''}; the highest priorities, for example:"
    )
    for alert in pick_alerts(outputs.alerts, 3):
        say(_indent(_format_alert(alert), 16))
    stages = Counter(str(letter.get("stage")) for letter in outputs.letters)
    by_stage = ", ".join(f"{k} {v}" for k, v in sorted(stages.items()))
    say(
        f"  dead letters  {r.dead_letters} ({by_stage or 'none'}), "
        f"read them with: kcat -b {s.kafka_bootstrap} -C -t {s.topics.dead_letter} -e"
    )
    for letter in outputs.letters[:5]:
        say(
            f"{' ' * 16}{letter.get('source_topic')}[{letter.get('partition')}]@{letter.get('offset')} "
            f"{letter.get('stage')}: {letter.get('error')}"
        )
    if not r.monitor_started:
        say("  drift         no monitor in this checkout (streams/monitor.py): no drift windows")
    else:
        reports = sorted(r.drift_reports, key=lambda d: str(d.get("window_start")))
        drifted = sum(1 for d in reports if d.get("dataset_drift"))
        skipped = r.monitor_health.get("windows_skipped", 0)
        actions = Counter(str(d.get("action") or "-") for d in reports)
        advice = ", ".join(f"{a} {actions[a]}" for a in ("none", "watch", "retrain") if actions[a])
        say(
            f"  drift         {len(reports)} windows reported ({drifted} with dataset drift"
            f"{f', {skipped} skipped while reports fell behind' if skipped else ''}); "
            f"the monitor advises: {advice or '-'}"
        )
        for d in reports:
            say(f"                {_format_report(d)}")
            say(f"{' ' * 18}{_format_verdict(d)}")
        say(
            f"{' ' * 16}monitor pages: http://{s.web_host}:{s.web_port}/ (up while the monitor runs: --serve)"
        )
        say(f"                HTML reports:  {s.report_dir}/*.html")
        ui = f"DO_NOT_TRACK=1 .venv/bin/evidently ui --workspace {s.report_dir}/workspace"
        say(f"                Evidently UI:  {ui}  (project {project_for(s.topic_prefix)!r})")
    say(
        f"  ROC-AUC       on the outcomes of predictions as of {split} or later (labels the model never saw):"
    )
    for name in ("batch", "online", "blend"):
        auc = r.auc.get(name)
        shown = f"{auc:.3f}" if auc is not None else "n/a"
        say(f"                {name:<7} {shown}  ({r.auc_rows.get(name, 0):,} outcomes)")
    say(f"  logs          {config.work_dir}/logs/ (scorer.log, monitor.log)")


# -- summary helpers -------------------------------------------------------------------------------


def held_out_auc(
    rows: list[tuple[int, float, float | None, float]],
) -> tuple[dict[str, float | None], dict[str, int]]:
    """ROC-AUC of the batch, online (where it had learned) and blended probabilities.

    >>> held_out_auc([(1, 0.9, None, 0.8), (0, 0.2, 0.3, 0.1), (1, 0.6, 0.7, 0.7)])[0]
    {'batch': 1.0, 'online': 1.0, 'blend': 1.0}
    """
    import numpy as np

    auc: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for name, column in (("batch", 1), ("online", 2), ("blend", 3)):
        pairs = [(row[0], row[column]) for row in rows if row[column] is not None]
        counts[name] = len(pairs)
        y = np.asarray([p[0] for p in pairs], dtype=np.int64)
        score = np.asarray([p[1] for p in pairs], dtype=np.float64)
        value = roc_auc(y, score)
        auc[name] = None if value is None else round(value, 4)
    return auc, counts


def pick_alerts(alerts: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` alerts of different customers, whose top reasons differ where they can, spread over the
    period.

    >>> a = [{"customer_id": c, "top_reasons": [{"feature": f}]} for c, f in
    ...      [("1", "x"), ("1", "y"), ("2", "x"), ("3", "x")]]
    >>> [(p["customer_id"], p["top_reasons"][0]["feature"]) for p in pick_alerts(a, 3)]
    [('1', 'x'), ('2', 'x'), ('3', 'x')]
    """
    picked: list[dict[str, Any]] = []
    seen: set[str] = set()
    customers: set[str] = set()
    step = max(len(alerts) // (4 * max(n, 1)), 1)
    for alert in alerts[::step]:
        reasons = alert.get("top_reasons") or [{}]
        top = str(reasons[0].get("feature"))
        if top in seen or str(alert.get("customer_id")) in customers:
            continue
        seen.add(top)
        customers.add(str(alert.get("customer_id")))
        picked.append(alert)
        if len(picked) == n:
            return picked
    for alert in alerts:
        if len(picked) == n:
            break
        if str(alert.get("customer_id")) not in customers:
            customers.add(str(alert.get("customer_id")))
            picked.append(alert)
    return picked


def risk_line(s: Settings, metadata: dict[str, Any]) -> str:
    """Where the risk categories start, and who chose the thresholds: a reader of "churn 0.49 LOW" on a
    data set where most customers churn needs to know that LOW is relative to the model's own deciles.

    >>> meta = {"risk_thresholds": {"high": 0.995481, "medium": 0.95179},
    ...         "thresholds": {"high_share": 0.1, "high_precision": 0.9997, "medium_share": 0.3171}}
    >>> print(risk_line(Settings(), meta))  # doctest: +NORMALIZE_WHITESPACE
    HIGH from 0.995, MEDIUM from 0.952: the model's own (its riskiest 10 % of held-out predictions, of
    which 99.97 % churned, and the next 22 %); CHURN_HIGH_THRESHOLD / CHURN_MEDIUM_THRESHOLD override them
    >>> print(risk_line(Settings(high_threshold=0.8, medium_threshold=0.5), meta))
    HIGH from 0.8, MEDIUM from 0.5: set by CHURN_HIGH_THRESHOLD / CHURN_MEDIUM_THRESHOLD
    >>> print(risk_line(Settings(high_threshold=0.999), meta))
    HIGH from 0.999, MEDIUM from 0.952: HIGH set by CHURN_HIGH_THRESHOLD, MEDIUM the model's own
    >>> print(risk_line(Settings(), {}))
    HIGH from 0.7, MEDIUM from 0.4: the contract's defaults (the model has no thresholds of its own)
    """
    own = metadata.get("risk_thresholds")
    high, medium = s.risk_thresholds(own)
    where = f"HIGH from {high:.3g}, MEDIUM from {medium:.3g}: "
    if s.high_threshold is not None and s.medium_threshold is not None:
        return where + "set by CHURN_HIGH_THRESHOLD / CHURN_MEDIUM_THRESHOLD"
    if s.high_threshold is not None or s.medium_threshold is not None:
        which = "HIGH" if s.high_threshold is not None else "MEDIUM"
        other = "MEDIUM" if which == "HIGH" else "HIGH"
        return where + (
            f"{which} set by CHURN_{which}_THRESHOLD, {other} the "
            + ("model's own" if own else "contract's default")
        )
    if not own:
        return where + "the contract's defaults (the model has no thresholds of its own)"
    t = metadata.get("thresholds") or {}
    shares = ""
    if {"high_share", "high_precision", "medium_share"} <= set(t):
        shares = (
            f" (its riskiest {t['high_share']:.0%} of held-out predictions, of which "
            f"{t['high_precision']:.2%} churned, and the next {t['medium_share'] - t['high_share']:.0%})"
        ).replace("%", " %")
    return where + f"the model's own{shares}; CHURN_HIGH_THRESHOLD / CHURN_MEDIUM_THRESHOLD override them"


def _alerts_policy(alerts: list[dict[str, Any]]) -> str:
    """What picked the alerts, from the alerts themselves (their ``policy``).

    >>> _alerts_policy([{"policy": "value_at_risk budget=0.1/month"}])
    'picked by value_at_risk budget=0.1/month'
    >>> _alerts_policy([])
    'none in the replayed period'
    """
    policies = Counter(str(a.get("policy") or "high_risk") for a in alerts)
    if not policies:
        return "none in the replayed period"
    return "picked by " + "; ".join(policy for policy, _ in policies.most_common(2))


def _format_alert(alert: dict[str, Any]) -> str:
    from churnstream.streams.alerts import format_alert

    return format_alert(alert)


def _format_report(report: dict[str, Any]) -> str:
    verdict = "DRIFT   " if report.get("dataset_drift") else "no drift"
    columns = list(report.get("drifted_columns") or [])
    shown = ", ".join(columns[:4]) + (f", +{len(columns) - 4}" if len(columns) > 4 else "")
    prediction = "yes" if (report.get("prediction_drift") or {}).get("drifted") else "no"
    concept = (report.get("concept_drift") or {}).get("detected")
    return (
        f"{str(report.get('window_start'))[:10]}..{str(report.get('window_end'))[:10]} "
        f"{int(report.get('rows') or 0):>7,} rows  {verdict} "
        f"share {float(report.get('drift_share') or 0):.2f}"
        f" ({shown or '-'}); prediction drift {prediction}; concept drift {'yes' if concept else 'no'}"
    )


def _format_verdict(report: dict[str, Any]) -> str:
    """The window's action and the performance it rests on: does the drift matter?"""
    estimated = report.get("estimated_performance") or {}
    realized = report.get("realized_performance") or {}
    parts = [f"action {report.get('action') or '-'}"]
    if estimated.get("value") is not None:
        interval = ""
        if estimated.get("lower") is not None and estimated.get("upper") is not None:
            interval = f" [{float(estimated['lower']):.3f}, {float(estimated['upper']):.3f}]"
        calibrated = estimated.get("calibrated_on") or {}
        if calibrated.get("labels"):
            interval += f" read through {int(calibrated['labels']):,} labels"
        parts.append(f"estimated ROC-AUC {float(estimated['value']):.3f}{interval}")
    if realized.get("value") is not None:
        parts.append(
            f"realized {float(realized['value']):.3f} on {int(realized.get('labels') or 0):,} labels of "
            f"{str(realized.get('window_start'))[:10]}..{str(realized.get('window_end'))[:10]}"
        )
    reason = report.get("action_reason")
    return "; ".join(parts) + (f" ({reason})" if reason else "")


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())
