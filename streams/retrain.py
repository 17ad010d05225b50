"""Closing the loop (#24): retrain from the topics into shadow, gather evidence, promote on it.

- ``churnstream retrain [--since T] [--until T]`` (:func:`cli`): train from the input topics (as ``train
  --from-topics``), register the model without promoting it, put it in shadow. Each step is logged and the
  registry's history records the shadow.
- ``churnstream models promote VERSION`` (:func:`models_cli`): when VERSION is or was in shadow, the
  evidence is read from ``churn_outcomes`` (:func:`read_outcomes`,
  :func:`churnstream.monitoring.evidence.evidence_from_outcomes`) and shown; a shadow the evidence says is
  worse is refused unless ``--force``. The other ``models`` actions are the registry's own.
- The monitor (:class:`LoopWatch`, called on each drift report): while a model is in shadow it adds the
  evidence to the report (``evidence``), promotes the shadow when ``CHURN_AUTO_PROMOTE_MARGIN`` is set and
  the evidence says better by that margin over ``CHURN_AUTO_PROMOTE_MIN_LABELS`` labels (the demoted model
  goes into shadow, so the same rule rolls back; not before ``churn_outcomes`` was read to its end once),
  and with ``CHURN_RETRAIN_ON_ADVICE=1`` starts ``churnstream retrain --until <the window's end>`` in a
  subprocess (one at a time) when the report's action is ``retrain`` and no model is in shadow. With that
  setting a shadow the evidence says is worse leaves the slot, so the loop goes on; so does one still
  ``undecided`` (on enough final labels) when a report advises ``retrain``: the current model is falling and
  the shadow is no better, so a candidate trained on newer events replaces it (one better by less than
  ``CHURN_AUTO_PROMOTE_MARGIN`` stays). While the evidence has too few labels, a ``retrain`` advice is
  logged as waiting for it.

The evidence counts the outcomes of predictions the current model made, after both models' training ends,
whose labels are all final (see :func:`churnstream.monitoring.evidence.evidence_from_outcomes`). A
partition's predictions are final up to the latest ``as_of`` of its "churned" (``inactivity``) outcomes:
a worker labels those once its event time passed a prediction's time plus the horizon and the lateness, the
last labels any prediction of that time gets. So a partition behind the others (an idle one holds its
worker's event time back) counts only what its own labels have settled.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import TopicPartition

from churnstream.errors import ChurnstreamError, ModelError
from churnstream.models.registry import ModelRegistry, evidence_text
from churnstream.models.registry import cli as registry_cli
from churnstream.monitoring.evidence import evidence_from_outcomes
from churnstream.monitoring.evidence import verdict as verdict_of
from churnstream.settings import Settings
from churnstream.timefmt import parse_time

log = logging.getLogger(__name__)


class ShadowOutcomes:
    """The outcomes that carry a shadow probability, as the evidence reads them, and ``final``: per
    partition of ``churn_outcomes``, the latest ``as_of`` of an ``inactivity`` outcome (epoch ms), up to
    which that partition's predictions have all their labels (see the module docstring)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.final: dict[int, int] = {}

    def add(self, value: bytes | None, partition: int = 0) -> bool:
        """Take one ``churn_outcomes`` message of ``partition``; True when it is a row of the evidence."""
        try:
            obj = orjson.loads(value or b"")
            as_of = parse_time(obj["as_of"])
            row = None
            if obj.get("shadow_probability") is not None:
                value_ = obj.get("customer_value")
                row = {
                    "as_of": as_of,
                    "label": int(obj["label"]),
                    "batch_probability": float(obj["batch_probability"]),
                    "shadow_probability": float(obj["shadow_probability"]),
                    "shadow_model_version": str(obj["shadow_model_version"]),
                    "model_version": obj.get("model_version"),
                    "customer_id": obj.get("customer_id"),
                    "customer_value": None if value_ is None else float(value_),
                    "partition": partition,
                }
        except Exception:  # not an outcome this reader can use: counted by nobody, like a foreign message
            return False
        self.settle(as_of, obj.get("source"), partition)
        if row is not None:
            self.rows.append(row)
        return row is not None

    def settle(self, as_of: int, source: Any, partition: int) -> None:
        """An outcome of ``source`` for a prediction ``as_of`` in ``partition``: a "churned" one moves how
        far that partition's labels are final."""
        if source == "inactivity" and as_of > self.final.get(partition, as_of - 1):
            self.final[partition] = as_of


def read_outcomes(settings: Settings) -> ShadowOutcomes:
    """The outcomes on ``churn_outcomes`` (up to its current end) that carry a shadow probability."""
    from churnstream.streams.reading import read_to_end

    found = ShadowOutcomes()
    for msg in read_to_end(settings, [settings.topics.churn_outcomes]):
        found.add(msg.value(), msg.partition() or 0)
    return found


def final_of(rows: list[dict[str, Any]]) -> dict[int, int]:
    """``ShadowOutcomes.final`` of rows given as they are (tests drive :class:`LoopWatch` with them): the
    latest ``as_of`` of the ``inactivity`` ones per ``partition`` (0 when they name none)."""
    found = ShadowOutcomes()
    for r in rows:
        found.settle(r["as_of"], r.get("source"), int(r.get("partition", 0)))
    return found.final


def trained_until(registry: ModelRegistry, *versions: str | None) -> int | None:
    """The latest training end of ``versions`` (epoch ms), as their metadata records it."""
    ends = []
    for version in versions:
        if version is None:
            continue
        try:
            end = (registry.metadata(version).get("training_window") or {}).get("end")
        except ModelError:
            continue
        if end:
            ends.append(parse_time(end, "training_window.end"))
    return max(ends, default=None)


def evidence_for(settings: Settings, registry: ModelRegistry, version: str) -> dict[str, Any]:
    """The evidence for ``version`` against the current model, from ``churn_outcomes``."""
    champion = registry.current_version()
    found = read_outcomes(settings)
    return evidence_from_outcomes(
        found.rows,
        shadow_version=version,
        champion_version=champion,
        final_until=found.final,
        after=trained_until(registry, version, champion),
        margin=0.0,
        min_labels=settings.monitor_min_labels,
        share=settings.alert_budget_share,
    )


def _was_shadow(registry: ModelRegistry, version: str) -> bool:
    return registry.shadow_version() == version or any(
        e.get("action") == "shadow" and e.get("version") == version for e in registry.log()
    )


def models_cli(args: Any, settings: Settings) -> int:
    """``churnstream models ...``: the registry's command, with the evidence shown (and heeded) on promote."""
    if args.action != "promote" or not args.version or getattr(args, "no_evidence", False):
        return registry_cli(args, settings)
    registry = ModelRegistry(args.model_dir or settings.model_dir)
    version = args.version
    if version not in registry.versions():  # the registry's own error, without a word on evidence first
        return registry_cli(args, settings)
    if not _was_shadow(registry, version):
        print(f"{version} was never in shadow: no evidence on live predictions", file=sys.stdout)
        return registry_cli(args, settings)
    try:
        evidence = evidence_for(settings, registry, version)
    except ChurnstreamError as exc:
        if not args.force:
            raise ModelError(
                f"cannot read the evidence for {version} from {settings.topics.churn_outcomes}: {exc}; "
                "promote with --force (or --no-evidence) to go ahead without it"
            ) from None
        print(f"no evidence ({exc}); promoting anyway (--force)", file=sys.stdout)
        return registry_cli(args, settings)
    print(evidence_text(evidence), file=sys.stdout)
    verdict = evidence["cumulative"]["verdict"]
    if registry.shadow_version() == version:
        registry.record_evidence(evidence)
    if verdict == "worse" and not args.force:
        raise ModelError(
            f"refusing to promote {version}: on the labelled live predictions it scored worse than "
            f"{registry.current_version()} (see above); --force promotes it anyway"
        )
    return registry_cli(args, settings)


def retrain(
    settings: Settings,
    *,
    model_dir: str | Path | None = None,
    since: int | None = None,
    until: int | None = None,
    progress: bool = True,
    replace_shadow: bool = False,
) -> str:
    """Train from the input topics, register (not promoted), put in shadow; returns the new version.

    A model already in shadow is not replaced (its evidence would be lost) unless ``replace_shadow``."""
    from churnstream.models.train import train
    from churnstream.streams.train_topics import export_topics, topics_source

    root = Path(model_dir or settings.model_dir)
    if not replace_shadow:
        _refuse_over_shadow(ModelRegistry(root))
    log.info("retrain: reading the input topics (since %s, until %s)", since, until)
    with tempfile.TemporaryDirectory(prefix="churnstream-retrain-") as tmp:
        export = export_topics(settings, Path(tmp), since=since, until=until, progress=progress)
        for line in export.lost:
            log.warning("history the topics no longer hold: %s", line)
        if not export.written.get("orders"):
            raise ChurnstreamError(
                "the input topics hold no orders in the chosen time range: nothing to train on"
            )
        log.info(
            "retrain: read %s; training",
            ", ".join(f"{n:,} {kind}" for kind, n in sorted(export.written.items())),
        )
        version = train(
            tmp,
            root,
            settings=settings,
            promote=False,
            progress=progress,
            source=topics_source(settings, since, until, export),
        )
    registry = ModelRegistry(root)
    log.info("retrain: registered %s (not promoted; current is %s)", version, registry.current_version())
    replaced = registry.shadow_version()
    if replaced is not None:
        if not replace_shadow:  # put there while this one trained
            _refuse_over_shadow(registry, trained=version)
        log.warning("retrain: %s takes the shadow slot of %s", version, replaced)
    registry.shadow(version, reason="retrain" if replaced is None else f"retrain, replacing {replaced}")
    log.info("retrain: %s is in shadow; workers score it within CHURN_MODEL_POLL_SECONDS", version)
    return version


def _refuse_over_shadow(registry: ModelRegistry, *, trained: str | None = None) -> None:
    """:class:`ChurnstreamError` when a candidate is in shadow: a retrain would throw away its evidence.
    A former champion in shadow (auto-promotion puts the demoted one there) is no candidate: replaced."""
    shadow = registry.shadow_version()
    if shadow is None or shadow in registry.history():
        return
    kept = f"; {trained} is registered, not in shadow" if trained else ""
    raise ChurnstreamError(
        f"{shadow} is in shadow, gathering evidence against {registry.current_version()} "
        f"(`churnstream models list` shows it): a retrain would take its place{kept}. Promote it "
        f"(`churnstream models promote {shadow}`), clear the slot (`churnstream models shadow --clear`), "
        "or pass --replace-shadow"
    )


def cli(args: Any, settings: Settings) -> int:
    """``churnstream retrain [--model-dir D] [--since T] [--until T] [--replace-shadow]``."""
    since = None if args.since is None else parse_time(args.since, "--since")
    until = None if args.until is None else parse_time(args.until, "--until")
    version = retrain(
        settings,
        model_dir=args.model_dir,
        since=since,
        until=until,
        progress=True,
        replace_shadow=getattr(args, "replace_shadow", False),
    )
    print(f"{version} is in shadow; promote it with `churnstream models promote {version}`")
    return 0


class OutcomeFollower:
    """The outcomes that carry a shadow probability, read incrementally from ``churn_outcomes`` by
    assignment (no consumer group): each :meth:`poll` adds what was published since the last, reading
    for at most ``max_seconds`` (the first for up to ``FIRST_READ_SECONDS``); ``caught_up`` says whether
    the last poll reached the end of every partition."""

    FIRST_READ_SECONDS = 60.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.found = ShadowOutcomes()
        self.caught_up = False
        self._consumer: Any = None
        self._next: dict[int, int] = {}  # partition -> the next offset to read

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.found.rows

    def poll(self, *, max_seconds: float = 5.0) -> int:
        """Read up to the end each partition had when the poll began; returns the evidence rows added."""
        from churnstream.streams.kafka import end_offsets, make_consumer

        topic = self.settings.topics.churn_outcomes
        if self._consumer is None:
            self._consumer = make_consumer(self.settings, f"churnstream-evidence-{uuid.uuid4().hex[:12]}")
            max_seconds = max(max_seconds, self.FIRST_READ_SECONDS)
        marks = end_offsets(self._consumer, topic)
        if any(p not in self._next for p in marks):  # the first poll, or partitions added since
            self._next = {p: self._next.get(p, low) for p, (low, _high) in marks.items()}
            self._consumer.assign([TopicPartition(topic, p, at) for p, at in sorted(self._next.items())])
        behind = {p: high for p, (_low, high) in marks.items()}
        added = 0
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            behind = {p: high for p, high in behind.items() if self._next.get(p, 0) < high}
            if not behind:
                break
            msg = self._consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            self._next[msg.partition() or 0] = (msg.offset() or 0) + 1
            added += self.found.add(msg.value(), msg.partition() or 0)
        self.caught_up = not behind
        return added

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class LoopWatch:
    """What the monitor does about the loop on each drift report (see the module docstring); the outcomes
    and the retrain process are injected so a test can drive it."""

    def __init__(
        self,
        settings: Settings,
        *,
        outcomes: Callable[[], list[dict[str, Any]]] | None = None,
        start_retrain: Callable[[str | None], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings.model_dir)
        self._follower: OutcomeFollower | None = None
        self._outcomes = outcomes
        self._start_retrain = start_retrain or self._spawn
        self.retraining: Any = None  # the running retrain process

    def outcomes(self) -> tuple[list[dict[str, Any]], dict[int, int], bool]:
        """The evidence rows, how far each partition's labels are final (``ShadowOutcomes.final``), and
        whether ``churn_outcomes`` was read to its end."""
        if self._outcomes is not None:
            rows = self._outcomes()
            return rows, final_of(rows), True
        if self._follower is None:
            self._follower = OutcomeFollower(self.settings)
        self._follower.poll()
        return self._follower.rows, self._follower.found.final, self._follower.caught_up

    def on_report(
        self, action: str | None, until: str | None = None, model_version: str | None = None
    ) -> dict[str, Any] | None:
        """Evidence for the report (None without a shadow); promotes, retires a worse shadow or retrains
        when the settings say. ``until``: the report's window end, where a retrain it starts stops reading.
        ``model_version``: the model the report is of; advice about a model no longer current (a monitor
        behind a promotion, or catching up) is not acted on."""
        current = self.registry.current_version()
        if model_version is not None and model_version != current and action not in (None, "none"):
            log.info(
                "the advice %s is about %s, which is no longer current (%s): not acted on",
                action,
                model_version,
                current,
            )
            action = None
        shadow = self.registry.shadow_version()
        evidence = None
        if shadow is not None:
            evidence = self.evidence(shadow, until)
            if self.maybe_promote(evidence) or not self.settings.retrain_on_advice:
                return evidence
            verdict = evidence["cumulative"]["verdict"]
            # undecided on enough final labels while the current model falls, and not better than it at
            # all (a shadow better, but by less than CHURN_AUTO_PROMOTE_MARGIN, is kept): no remedy
            no_remedy = (
                verdict == "undecided"
                and action == "retrain"
                and verdict_of(evidence["cumulative"], margin=0.0, min_labels=0) != "better"
            )
            if (verdict != "worse" and not no_remedy) or not evidence["read_to_end"]:
                if action == "retrain":
                    log.warning(
                        "the monitor advises retrain, but %s is in shadow and its evidence says %s: a "
                        "retrain waits until it is promoted or leaves the slot (`churnstream models shadow "
                        "--clear`)",
                        shadow,
                        verdict,
                    )
                return evidence
            said = f"{'worse' if verdict == 'worse' else 'no better'} than {evidence['champion_version']} on "
            said += f"{evidence['cumulative']['labels']} labels"
            if no_remedy:
                said += " while the monitor advises retrain"
            if self.registry.shadow_version() == shadow:  # not another one put there meanwhile
                self.registry.shadow(None, reason=f"{said} (CHURN_RETRAIN_ON_ADVICE)")
                log.info("%s is %s: it leaves the shadow slot", shadow, said)
                evidence["left_slot"] = (
                    f"{shadow} is {said}: it left the shadow slot (CHURN_RETRAIN_ON_ADVICE)"
                )
        if action == "retrain" and self.settings.retrain_on_advice:
            self.maybe_retrain(until)
        return evidence

    def evidence(self, shadow: str, until: str | None = None) -> dict[str, Any]:
        """The evidence for ``shadow``; with ``until`` (a report's window end), as that window's end knew
        it: only predictions whose labels were all known by then (their horizon and the allowed lateness
        ended), so a report drawn late (a monitor catching up, a restart) does not show later labels."""
        s = self.settings
        rows, final, read_to_end = self.outcomes()
        if until is not None:
            known = parse_time(until, "window_end") - s.horizon_ms - s.lateness_ms
            final = {p: min(t, known) for p, t in final.items()}
        champion = self.registry.current_version()
        evidence = evidence_from_outcomes(
            rows,
            shadow_version=shadow,
            champion_version=champion,
            final_until=final,
            after=trained_until(self.registry, shadow, champion),
            margin=s.auto_promote_margin or 0.0,
            min_labels=max(
                s.auto_promote_min_labels if s.auto_promote_margin is not None else 0, s.monitor_min_labels
            ),
            share=s.alert_budget_share,
        )
        evidence["read_to_end"] = read_to_end
        evidence["demoted"] = shadow in self.registry.history()  # a former champion: a retrain replaces it
        try:  # for `models list`; the report carries the evidence either way
            self.registry.record_evidence(evidence)
        except OSError as exc:
            log.warning("cannot keep the evidence in %s: %s", self.registry.root, exc)
        return evidence

    def maybe_promote(self, evidence: dict[str, Any]) -> bool:
        """Promote the shadow when the auto-promotion policy allows; the demoted model becomes the shadow."""
        if self.settings.auto_promote_margin is None or evidence["cumulative"]["verdict"] != "better":
            return False
        shadow, champion = evidence["shadow_version"], self.registry.current_version()
        if shadow != self.registry.shadow_version() or shadow == champion:
            return False
        if not evidence.get("read_to_end", True):
            log.info("auto-promotion of %s waits until churn_outcomes is read to its end", shadow)
            return False
        log.info(
            "auto-promotion: %s beats %s (ROC-AUC difference %s over %d labels); promoting it",
            shadow,
            champion,
            evidence["cumulative"]["roc_auc"]["interval"],
            evidence["cumulative"]["labels"],
        )
        self.registry.promote(shadow)
        if champion is not None:
            self.registry.shadow(champion, reason="demoted by auto-promotion")
        return True

    def maybe_retrain(self, until: str | None = None) -> bool:
        """Start one retrain (on the events before ``until``, when given) unless one is running; True when
        started."""
        if self.retraining is not None and self.retraining.poll() is None:
            return False
        log.info("the monitor advises retrain: starting `churnstream retrain` (until %s)", until or "now")
        self.retraining = self._start_retrain(until)
        return True

    def _spawn(self, until: str | None) -> Any:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from churnstream.cli import main; sys.exit(main(sys.argv[1:]))",
                "retrain",
                "--model-dir",
                str(self.settings.model_dir),
                *(["--until", until] if until else []),
            ]
        )

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()


__all__ = ["LoopWatch", "OutcomeFollower", "cli", "evidence_for", "models_cli", "read_outcomes", "retrain"]
