"""The steps of one demo run (:class:`Demo`), and ``churnstream demo`` (:func:`cli`)."""

from __future__ import annotations

import contextlib
import io
import math
import signal
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from churnstream.errors import ChurnstreamError, ConfigError, InfraError
from churnstream.events import format_time, parse_time
from churnstream.settings import DAY_MS, Settings
from churnstream.streams.demo.cleanup import clear_previous, mark_demo_dir, stop_leftover_workers
from churnstream.streams.demo.config import (
    DEMO_DIR,
    DEMO_PREFIX,
    DRIFT_WINDOWS,
    STEPS,
    TRAIN_UNTIL,
    DemoConfig,
    DemoResult,
)
from churnstream.streams.demo.console import Console
from churnstream.streams.demo.events import (
    Events,
    load_events,
    send_broken,
    write_chunks,
    write_event_files,
)
from churnstream.streams.demo.report import Outputs, print_summary, read_outputs
from churnstream.streams.demo.watch import (
    end_offsets,
    free_port,
    get_json,
    monitor_caught_up,
    scorer_caught_up,
)
from churnstream.streams.kafka import commit_group_offsets
from churnstream.streams.processes import WorkerProcess, start_worker


class Demo:
    """One run of the demo: :meth:`run` does every step and always stops what it started."""

    def __init__(self, *, config: DemoConfig, settings: Settings, out: TextIO | None = None) -> None:
        self.config = config
        self.base = settings
        bars = sys.stderr.isatty() if config.progress is None else config.progress
        self.console = Console(out=out or sys.stdout, total=STEPS, bars=bars)
        work = config.work_dir
        self.settings = replace(
            settings,
            topic_prefix=config.prefix,
            model_dir=work / "models",
            report_dir=work / "reports",
            var_dir=work,
            sweep_milestones_days=config.sweep_milestones_days,
            scorer_group="",  # the demo's own group under its prefix, whatever CHURN_CONSUMER_GROUP says
        )
        self.outputs = Outputs()
        self.monitor_from: dict[tuple[str, int], int] = {}
        self.workers: list[WorkerProcess] = []
        self.started_services: list[str] = []
        self.result = DemoResult()
        self.train_until = parse_time(config.train_until, "--train-until")
        self.replay_until = parse_time(config.replay_until, "--replay-until") if config.replay_until else None

    @property
    def monitor_group(self) -> str:
        return f"{self.settings.topic_prefix}churnstream-monitor"  # streams.monitor.app_id

    # -- the steps ---------------------------------------------------------------------------------
    def run(self) -> DemoResult:
        started = time.perf_counter()
        say = self.console.say
        say(
            f"churnstream demo: CDNOW orders through Kafka, topic prefix {self.config.prefix!r}, "
            f"work directory {self.config.work_dir}"
        )
        try:
            self._services()
            self._prepare_topics()
            events = self._prepare_events()
            self._train()
            scorer = self._start_scorer()
            split = events.split(self.train_until)
            end = events.split(self.replay_until) if self.replay_until is not None else len(events.times)
            self._publish_history(events, split, scorer)
            monitor = self._start_monitor(events, split, end)
            self._replay(events, split, end)
            self._wait_for_scorer(scorer, "scorer catches up on the replay")
            self._wait_for_monitor(monitor)
            with self.console.step("read the output topics") as notes:
                self.outputs = read_outputs(self.settings, self.train_until, self.result)
                notes.append(f"{self.outputs.messages:,} messages")
            self.result.seconds = time.perf_counter() - started
            print_summary(self.console.say, self.config, self.settings, self.result, self.outputs)
            if self.config.serve:
                self._serve()
        finally:
            self._stop()
        return self.result

    def _services(self) -> None:
        from churnstream.local_infra import ensure_kafka, ensure_redis

        with self.console.step("Kafka and Redis") as notes:
            for name, ensure in (("Kafka", ensure_kafka), ("Redis", ensure_redis)):
                status = ensure(self.base)
                if status.started_now:
                    self.started_services.append(status.name)
                    notes.append(f"{name} started at {status.address} (stopped again at the end)")
                else:
                    notes.append(f"{name} already running at {status.address}")

    def _prepare_topics(self) -> None:
        from churnstream.streams.topics import create_topics

        with self.console.step("clean start") as notes:
            for name, pid in stop_leftover_workers(self.config.work_dir / "logs"):
                notes.append(f"stopped the previous demo's {name} (pid {pid}), still running")
            gone = clear_previous(
                self.settings, [self.settings.consumer_group, self.monitor_group], self.config.work_dir
            )
            notes.append("removed the previous demo's " + ", ".join(gone) if gone else "nothing to clear")
            mark_demo_dir(self.config.work_dir)
            created = create_topics(self.settings)
            notes.append(
                f"created {len(created.created)} topics {self.config.prefix}* "
                f"({self.settings.topic_partitions} partitions each)"
            )

    def _prepare_events(self) -> Events:
        from churnstream.sources.cdnow import convert_cdnow

        work = self.config.work_dir
        with self.console.step("events") as notes:
            manifest = convert_cdnow(work / "cdnow", seed=self.config.seed)
            events = load_events(work / "cdnow", customers=self.config.customers, seed=self.config.seed)
            if self.config.customers is not None:
                write_event_files(events, work / "events")
            kinds = Counter(events.kinds)
            notes.append(
                f"CDNOW {manifest['first_order'][:10]}..{manifest['last_order'][:10]}: "
                f"{events.customers:,} customers, {kinds['orders']:,} orders (real), "
                f"{kinds['support_tickets']:,} ticket events (simulated), "
                f"{kinds['customer_profiles']:,} profiles"
            )
        self.events_dir = work / "events" if self.config.customers is not None else work / "cdnow"
        return events

    def _train(self) -> None:
        from churnstream.models.train import train

        with self.console.step(f"train on events before {self.config.train_until[:10]}") as notes:
            text = io.StringIO()
            version = train(
                self.events_dir,
                self.settings.model_dir,
                settings=self.settings,
                until=self.train_until,
                promote=True,
                progress=self.console.bars,
                out=text,
            )
            self.result.model_version = version
            table = text.getvalue().rstrip().splitlines()
            notes.append(f"{table[0] if table else version} in {self.settings.model_dir}")
        for line in table[1:]:
            self.console.say(f"        {line}")

    def _spawn(self, name: str, command: str, settings: Settings) -> WorkerProcess:
        logs = self.config.work_dir / "logs"
        # its own session: Ctrl-C reaches the demo, which stops the workers in order
        worker = start_worker(command, settings, log=logs / f"{name}.log", own_session=True, name=name)
        (logs / f"{name}.pid").write_text(str(worker.pid))  # so a later demo can stop it if we are killed
        self.workers.append(worker)
        return worker

    def _start_scorer(self) -> WorkerProcess:
        host = self.settings.web_host
        self.settings = replace(self.settings, metrics_port=free_port(host, self.settings.metrics_port))
        with self.console.step("start the scorer") as notes:
            scorer = self._spawn("scorer", "score", self.settings)
            health = f"http://{host}:{self.settings.metrics_port}/health"
            deadline = time.monotonic() + 120
            while True:
                scorer.check()
                state = get_json(health)
                if state is not None and state.get("partitions"):
                    break
                if time.monotonic() > deadline:
                    raise InfraError(f"the scorer did not get its partitions within 120 s; see {scorer.log}")
                time.sleep(0.3)
            notes.append(
                f"churnstream score (pid {scorer.proc.pid}), group {self.settings.consumer_group}, "
                f"silent customers rescored at {self.config.sweep_milestones_days} days of silence, "
                f"health {health}, log {scorer.log}"
            )
        return scorer

    def _publish(
        self, events: Events, lo: int, hi: int, directory: Path, desc: str, *, broken: bool = False
    ) -> None:
        """Publish events ``lo..hi`` as ``churnstream publish`` does, a chunk of event time at a time."""
        from churnstream.streams.publish import publish_file

        chunks = write_chunks(events, lo, hi, directory, chunk_ms=int(self.config.chunk_days * DAY_MS))
        bar = self.console.progress(hi - lo, desc)
        done = 0
        try:
            for number, (path, count, start) in enumerate(chunks):
                result = publish_file(path, self.settings, progress=False)
                if not result.ok:
                    problems = [
                        f"line {n}: {r}" for n, r in result.invalid_lines[:3]
                    ] + result.delivery_errors[:3]
                    raise InfraError(f"publishing {path} failed: " + "; ".join(problems))
                done += count
                bar.set(done, format_time(start)[:10])
                if broken and number == 0:
                    self.result.broken_sent = send_broken(self.settings, events.lines[lo], start)
                self._check_workers()
        finally:
            bar.close()

    def _check_workers(self) -> None:
        for worker in self.workers:
            worker.check()

    def _publish_history(self, events: Events, split: int, scorer: WorkerProcess) -> None:
        title = f"history {format_time(events.times[0])[:10]}..{format_time(self.train_until - 1)[:10]}"
        with self.console.step(title) as notes:
            self._publish(events, 0, split, self.config.work_dir / "replay" / "history", "publish history")
            self.result.events_history = split
            totals = scorer_caught_up(
                self.settings, scorer, self.console, "scorer builds features", timeout_s=self.config.timeout_s
            )
            notes.append(
                f"published {split:,} events; the scorer built the features of every customer from them "
                f"({totals.get('predictions', 0):,} event predictions, {totals.get('sweeps', 0):,} sweeps)"
            )
        self.history_totals = totals

    def _start_monitor(self, events: Events, split: int, end: int) -> WorkerProcess | None:
        with self.console.step("start the monitor") as notes:
            first = events.times[split] if split < len(events.times) else self.train_until
            last = events.times[end - 1] if end > split else first
            days = max((last - first) / DAY_MS, 1.0)
            target = max(self.config.drift_windows, 1)
            # Predictions to expect: the replay's events plus sweeps at the history's rate per day.
            history_days = max((self.train_until - events.times[0]) / DAY_MS, 1.0)
            sweeps = self.history_totals.get("sweeps", 0) / history_days * days
            rows = max(200, math.ceil((end - split + sweeps) / target))
            window_days = max(1.0, math.ceil(days / target))
            host = self.settings.web_host
            self.settings = replace(
                self.settings,
                web_port=free_port(host, self.settings.web_port),
                drift_window_rows=rows,
                drift_window_days=float(window_days),
            )
            # The monitor watches the replayed period, as if deployed with the model: its group starts
            # at the end of what the history produced.
            batches = self.settings.topics.monitoring_batches
            self.monitor_from = end_offsets(self.settings, self.monitor_group, [batches])
            commit_group_offsets(self.settings, self.monitor_group, self.monitor_from)
            monitor = self._spawn("monitor", "monitor", self.settings)
            self.result.monitor_started = True
            notes.append(
                f"churnstream monitor (pid {monitor.proc.pid}), windows of {rows:,} predictions or "
                f"{window_days:g} days, pages at http://{host}:{self.settings.web_port}/, log {monitor.log}"
            )
        return monitor

    def _replay(self, events: Events, split: int, end: int) -> None:
        first = format_time(events.times[split])[:10] if split < end else "-"
        last = format_time(events.times[end - 1])[:10] if split < end else "-"
        with self.console.step(f"replay {first}..{last}") as notes:
            started = time.perf_counter()
            self._publish(
                events, split, end, self.config.work_dir / "replay" / "held_out", "replay", broken=True
            )
            self.result.events_replay = end - split
            seconds = time.perf_counter() - started
            notes.append(
                f"published {end - split:,} held-out events in event-time order across topics "
                f"({(end - split) / max(seconds, 1e-9):,.0f} events/s), "
                f"plus {self.result.broken_sent} broken messages"
            )

    def _wait_for_scorer(self, scorer: WorkerProcess, title: str) -> None:
        with self.console.step(title) as notes:
            totals = scorer_caught_up(
                self.settings, scorer, self.console, "scorer", timeout_s=self.config.timeout_s
            )
            notes.append(
                f"committed offsets == end offsets; {totals.get('events', 0):,} events, "
                f"{totals.get('predictions', 0):,} event predictions and "
                f"{totals.get('sweeps', 0):,} sweeps in all"
            )

    def _wait_for_monitor(self, monitor: WorkerProcess | None) -> None:
        with self.console.step("monitor reports its windows") as notes:
            if monitor is None:
                notes.append("skipped (no monitor)")
                return
            state = monitor_caught_up(
                self.settings,
                monitor,
                self.console,
                group=self.monitor_group,
                start=self.monitor_from,
                timeout_s=self.config.timeout_s,
            )
            self.result.monitor_health = state
            light, later = state.get("windows_light", 0), state.get("windows_drawn_later", 0)
            notes.append(
                f"{state.get('windows_reported', 0)} windows reported, "
                f"{state.get('windows_skipped', 0)} skipped, "
                + (f"{light} published light ({later} drawn in full since), " if light else "")
                + f"{state.get('rows_pending', 0):,} predictions in the window still open"
            )

    def _serve(self) -> None:
        s = self.settings
        self.console.say(
            f"\nServing until Ctrl-C: monitor pages http://{s.web_host}:{s.web_port}/, scorer "
            f"http://{s.web_host}:{s.metrics_port}/metrics; churnstream alerts --follow with "
            f"CHURN_TOPIC_PREFIX={s.topic_prefix}"
        )
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                self._check_workers()
                time.sleep(1.0)

    def _stop(self) -> None:
        """Stop the workers (SIGTERM) and the services this run started, unless told to keep them."""
        from churnstream.local_infra import KafkaNode, RedisNode, stop_kafka, stop_redis

        stopped = []
        for worker in reversed(self.workers):
            code = worker.stop()
            stopped.append(f"{worker.name} (exit {code})")
        if self.started_services and not self.config.keep_running:
            if "kafka" in self.started_services:
                stop_kafka(KafkaNode.from_settings(self.base))
                stopped.append("Kafka")
            if "redis" in self.started_services:
                stop_redis(RedisNode.from_settings(self.base))
                stopped.append("Redis")
        if stopped:
            self.console.say(f"stopped {', '.join(stopped)}")
        kept = [name for name in self.started_services if self.config.keep_running]
        if kept:
            self.console.say(
                f"left running (--keep-running): {', '.join(kept)}; stop with: churnstream infra down"
            )


def run_demo(config: DemoConfig, settings: Settings, *, out: TextIO | None = None) -> DemoResult:
    """Run the whole demo (see the module docstring) and return what it saw."""
    return Demo(config=config, settings=settings, out=out).run()


def cli(args: Any, settings: Settings) -> int:
    """``churnstream demo [--customers N] [--keep-running] [--serve] ...``."""
    config = DemoConfig(
        customers=getattr(args, "customers", None),
        keep_running=bool(getattr(args, "keep_running", False)),
        serve=bool(getattr(args, "serve", False)),
        prefix=getattr(args, "prefix", None) or DEMO_PREFIX,
        work_dir=Path(getattr(args, "work_dir", None) or DEMO_DIR),
        train_until=getattr(args, "train_until", None) or TRAIN_UNTIL,
        replay_until=getattr(args, "replay_until", None),
        drift_windows=getattr(args, "drift_windows", None) or DRIFT_WINDOWS,
    )
    if config.customers is not None and config.customers < 1:
        raise ConfigError("--customers must be at least 1")

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # stop the workers on the way out, as for Ctrl-C

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        run_demo(config, settings)
    except ChurnstreamError as exc:
        print(f"churnstream demo: error: {exc}", file=sys.stderr)
        return 1
    return 0
