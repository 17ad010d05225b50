"""``churnstream demo``: the whole story on one machine, end to end, on the real CDNOW order log.

What it does, one numbered line per step (long steps show a progress bar):

1. makes sure Kafka and Redis answer (starting local ones with :mod:`churnstream.local_infra` when needed);
2. clears what a previous demo left: its topics (prefix ``demo.``), consumer groups, Redis keys
   (``churn:demo.:*``) and work directory (``var/demo``), then creates the topics;
3. prepares the events: CDNOW orders plus simulated tickets and profiles (``churnstream dataset cdnow``),
   optionally a sample of ``--customers N``, split at ``--train-until`` (default 1997-10-01) into the
   *history* the model learns from and the *replay* it is judged on;
4. trains and promotes the batch model on the history only (:func:`churnstream.models.train.train`);
5. starts ``churnstream score`` as a subprocess and publishes the history through Kafka, so the scorer
   builds every customer's features from the log, as a fresh deployment would;
6. starts ``churnstream monitor`` (drift windows from the replay on) and replays the held-out period
   through Kafka in event-time order, a week of events per ``publish`` chunk, plus a few broken messages
   from a careless producer that must end up in ``dead_letter``;
7. waits until the scorer has committed every input offset and the monitor has reported its windows;
8. reads the output topics and prints what happened: predictions, alerts (with reasons and actions),
   dead letters, drift windows and where to view the reports, and the ROC-AUC of the batch, online and
   blended probabilities on the outcomes of the replayed period.

Workers get their settings as ``CHURN_*`` variables built from :class:`Settings`; their logs are in
``var/demo/logs``. At the end the demo stops the workers (SIGTERM), and Kafka and Redis only when it
started them (unless ``--keep-running``). ``--serve`` keeps the workers, and so the monitor's pages, up
until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import orjson

from churnstream.errors import ChurnstreamError, ConfigError, InfraError
from churnstream.events import format_time, parse_time
from churnstream.settings import DAY_MS, Settings, child_env

EVENT_FILES = ("customer_profiles", "orders", "support_tickets")
TRAIN_UNTIL = "1997-10-01T00:00:00Z"
DEMO_PREFIX = "demo."
DEMO_DIR = Path("var/demo")
DRIFT_WINDOWS = 8
STEPS = 11
LOG_TAIL_LINES = 30


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """What the demo does; the defaults are the full CDNOW data set under ``var/demo``."""

    prefix: str = DEMO_PREFIX
    work_dir: Path = DEMO_DIR
    customers: int | None = None
    train_until: str = TRAIN_UNTIL
    replay_until: str | None = None
    seed: int = 7
    chunk_days: float = 30.0
    # Silent customers are rescored when their silence reaches these days. The default milestones
    # (7, 14, 30, 60, 90, 180) make twice as many sweeps as events on this cohort, most of whom buy
    # once: more than the demo's five minutes allow on two cores.
    sweep_milestones_days: str = "30,90"
    drift_windows: int = DRIFT_WINDOWS
    keep_running: bool = False
    serve: bool = False
    timeout_s: float = 900.0
    progress: bool | None = None


@dataclass(slots=True)
class DemoResult:
    """What the demo saw on the topics; the summary prints it and the tests compare it with the topics."""

    model_version: str = ""
    events_history: int = 0
    events_replay: int = 0
    broken_sent: int = 0
    predictions: Counter[str] = field(default_factory=Counter)
    predictions_replay: Counter[str] = field(default_factory=Counter)
    alerts: int = 0
    alerts_replay: int = 0
    alerted_customers: int = 0
    outcomes: int = 0
    dead_letters: int = 0
    drift_reports: list[dict[str, Any]] = field(default_factory=list)
    auc: dict[str, float | None] = field(default_factory=dict)
    auc_rows: dict[str, int] = field(default_factory=dict)
    monitor_started: bool = False
    monitor_health: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# -- console -------------------------------------------------------------------------------------


class _Console:
    """Numbered step lines with timings on ``out``; progress bars (or periodic lines) on stderr."""

    def __init__(self, *, out: TextIO, total: int, bars: bool) -> None:
        self.out = out
        self.total = total
        self.bars = bars
        self.number = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[list[str]]:
        """Yields a list the step appends its result to; prints ``[n/N] title: result (t s)`` at the end."""
        self.number += 1
        tag = f"[{self.number:>2}/{self.total}]"
        notes: list[str] = []
        started = time.perf_counter()
        try:
            yield notes
        except BaseException as exc:
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            self.say(f"{tag} {title}: {what} after {time.perf_counter() - started:.1f} s")
            raise
        detail = "; ".join(notes)
        self.say(f"{tag} {title}: {detail} ({time.perf_counter() - started:.1f} s)")

    def progress(self, total: int, desc: str, unit: str = "ev") -> _Progress:
        return _Progress(total, desc, unit, bar=self.bars)


class _Progress:
    """A tqdm bar on a terminal; elsewhere (CI logs, pipes) a plain line every ``every`` seconds."""

    def __init__(self, total: int, desc: str, unit: str, *, bar: bool, every: float = 15.0) -> None:
        self.total = total
        self.desc = desc
        self.n = 0
        self.note = ""
        self.every = every
        self._last = time.monotonic()
        self._bar: Any = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=f"      {desc}", unit=unit, unit_scale=True, leave=False)

    def set(self, n: int, note: str = "") -> None:
        n = min(max(n, 0), self.total) if self.total else n
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
            if note != self.note:
                self._bar.set_postfix_str(note)
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            share = f"{100 * n / self.total:3.0f}%" if self.total else ""
            print(f"      {self.desc}: {share} {n:,}/{self.total:,} {note}", file=sys.stderr, flush=True)
        self.n = n
        self.note = note

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# -- workers -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Worker:
    """A ``churnstream`` subprocess with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def check(self) -> None:
        """Raise :class:`InfraError` with the end of the log when the process has exited."""
        code = self.proc.poll()
        if code is not None:
            raise InfraError(
                f"{self.name} exited with code {code}; last lines of {self.log}:\n{tail(self.log)}"
            )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def stop_leftover_workers(logs: Path) -> list[tuple[str, int]]:
    """Stop workers a previous demo started and left running (it was killed before it could stop them)."""
    stopped = []
    for pid_file in sorted(logs.glob("*.pid")) if logs.is_dir() else []:
        try:
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue  # gone (or not Linux): nothing to stop
        if b"churnstream.cli" not in cmdline:
            continue  # the pid was reused by something else
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        stopped.append((pid_file.stem, pid))
    return stopped


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, indented."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text[-lines:])


def free_port(host: str, preferred: int) -> int:
    """``preferred`` when nothing listens there, else a free port the OS picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise InfraError(f"no free TCP port on {host}")


def get_json(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The JSON at ``url``, or None when nothing answers (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (OSError, ValueError):
        return None


# -- events --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Events:
    """Every event line of the data set with its event time and base topic, in event-time order."""

    times: list[int]
    kinds: list[str]
    lines: list[bytes]
    customers: int

    def split(self, at: int) -> int:
        """Index of the first event at or after ``at``."""
        import bisect

        return bisect.bisect_left(self.times, at)


def load_events(directory: Path, *, customers: int | None, seed: int) -> _Events:
    """Read the event files of ``directory``; keep a seeded sample of ``customers`` customers if given."""
    rows: list[tuple[int, int, str, bytes]] = []
    seen: set[str] = set()
    for rank, kind in enumerate(EVENT_FILES):
        path = directory / f"{kind}.jsonl"
        with path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                obj = orjson.loads(line)
                seen.add(obj["customer_id"])
                rows.append((parse_time(obj["timestamp"]), rank, obj["customer_id"], line.rstrip(b"\n")))
    keep: set[str] | None = None
    if customers is not None and customers < len(seen):
        keep = set(sorted(seen, key=lambda c: zlib.crc32(f"{seed}:{c}".encode()))[:customers])
        rows = [r for r in rows if r[2] in keep]
    # Stable by time: a profile (rank 0) precedes the first order it describes at the same instant.
    rows.sort(key=lambda r: (r[0], r[1]))
    return _Events(
        times=[r[0] for r in rows],
        kinds=[EVENT_FILES[r[1]] for r in rows],
        lines=[r[3] for r in rows],
        customers=len(keep) if keep is not None else len(seen),
    )


def write_event_files(events: _Events, directory: Path) -> None:
    """One ``<kind>.jsonl`` per topic (the layout ``churnstream train --events`` reads)."""
    directory.mkdir(parents=True, exist_ok=True)
    handles = {kind: (directory / f"{kind}.jsonl").open("wb") for kind in EVENT_FILES}
    try:
        for kind, line in zip(events.kinds, events.lines, strict=True):
            handles[kind].write(line + b"\n")
    finally:
        for handle in handles.values():
            handle.close()


def write_chunks(
    events: _Events, lo: int, hi: int, directory: Path, *, chunk_ms: int
) -> list[tuple[Path, int, int]]:
    """Events ``lo..hi`` as JSON-lines files of ``chunk_ms`` of event time each, all topics merged in
    event-time order; returns ``(path, events, first event time)`` per file."""
    directory.mkdir(parents=True, exist_ok=True)
    chunks: list[tuple[Path, int, int]] = []
    i = lo
    while i < hi:
        start = events.times[i]
        j = i
        while j < hi and events.times[j] < start + chunk_ms:
            j += 1
        path = directory / f"{len(chunks):04d}-{format_time(start)[:10]}.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in events.lines[i:j]))
        chunks.append((path, j - i, start))
        i = j
    return chunks


def broken_messages(customer_id: str, at: int) -> list[tuple[str, bytes | None, bytes]]:
    """``(base topic, key, value)`` of messages a careless producer might send; each breaks one rule."""
    ts = format_time(at)
    cid = customer_id.encode()
    order = {"event_id": "demo-bad-1", "customer_id": customer_id, "order_id": "demo-bad-o1", "timestamp": ts}
    return [
        ("orders", cid, orjson.dumps({**order, "amount": -5.0})),
        ("orders", cid, orjson.dumps({**order, "event_id": "demo-bad-2", "amount": "12.50"})),
        ("orders", cid, orjson.dumps({**order, "event_id": "demo-bad-3", "timestamp": ts[:10] + " 10:00"})),
        ("support_tickets", cid, b"ticket #4711: customer called, very angry"),
    ]


# -- Kafka helpers ---------------------------------------------------------------------------------


def _admin(settings: Settings) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(settings.kafka_config())


class Offsets:
    """End offsets of topics and committed offsets of consumer groups, through one admin client.

    (The client must outlive the futures it returns: a collected client never completes them.)
    """

    def __init__(self, settings: Settings) -> None:
        self.admin = _admin(settings)

    def end(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """(topic, partition) -> end offset of every partition of ``topics``."""
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        metadata = self.admin.list_topics(timeout=10)
        request = {
            TopicPartition(t, p): OffsetSpec.latest() for t in topics for p in metadata.topics[t].partitions
        }
        futures = self.admin.list_offsets(request, request_timeout=10)
        return {(tp.topic, tp.partition): f.result(timeout=30).offset for tp, f in futures.items()}

    def committed(self, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """(topic, partition) -> offset ``group`` committed (0 when nothing yet)."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in partitions])]
        future = self.admin.list_consumer_group_offsets(request, request_timeout=10)[group]
        result = future.result(timeout=30)
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in result.topic_partitions}


def commit_offsets(settings: Settings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit ``offsets`` for ``group`` (which must have no members), like
    ``kafka-consumer-groups --reset-offsets --to-latest``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(settings.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def clear_previous(settings: Settings, groups: list[str], work_dir: Path) -> list[str]:
    """Delete the prefix's topics, the groups, the prefix's Redis keys and ``work_dir``; says what went."""
    import redis
    from confluent_kafka import KafkaException

    from churnstream.streams.topics import existing_topics

    prefix = settings.topic_prefix
    if not prefix:
        raise ConfigError("the demo needs a topic prefix of its own; it deletes the topics under it")
    done = []
    admin = _admin(settings)
    doomed = [name for name in existing_topics(settings) if name.startswith(prefix)]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                future.result()
        deadline = time.monotonic() + 60
        while any(name.startswith(prefix) for name in existing_topics(settings)):
            if time.monotonic() > deadline:
                raise InfraError(f"topics under {prefix} were not deleted within 60 s")
            time.sleep(0.2)
        done.append(f"{len(doomed)} topics")
    gone = 0
    for future in admin.delete_consumer_groups(groups, request_timeout=15).values():
        with contextlib.suppress(KafkaException):  # GROUP_ID_NOT_FOUND: nothing to clear
            future.result()
            gone += 1
    if gone:
        done.append(f"{gone} consumer groups")
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"churn:{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                keys += client.unlink(*batch)
                batch = []
        if batch:
            keys += client.unlink(*batch)
    finally:
        client.close()
    if keys:
        done.append(f"{keys:,} Redis keys churn:{prefix}*")
    if work_dir.exists():
        shutil.rmtree(work_dir)
        done.append(str(work_dir))
    return done


# -- the demo ------------------------------------------------------------------------------------


class Demo:
    """One run of the demo: :meth:`run` does every step and always stops what it started."""

    def __init__(self, *, config: DemoConfig, settings: Settings, out: TextIO | None = None) -> None:
        self.config = config
        self.base = settings
        bars = sys.stderr.isatty() if config.progress is None else config.progress
        self.console = _Console(out=out or sys.stdout, total=STEPS, bars=bars)
        work = config.work_dir
        self.settings = replace(
            settings,
            topic_prefix=config.prefix,
            model_dir=work / "models",
            report_dir=work / "reports",
            var_dir=work,
            sweep_milestones_days=config.sweep_milestones_days,
        )
        self._offsets: Offsets | None = None
        self.monitor_from: dict[tuple[str, int], int] = {}
        self.workers: list[_Worker] = []
        self.started_services: list[str] = []
        self.result = DemoResult()
        self.train_until = parse_time(config.train_until, "--train-until")
        self.replay_until = parse_time(config.replay_until, "--replay-until") if config.replay_until else None

    @property
    def offsets(self) -> Offsets:
        """Created on first use, once Kafka is known to answer."""
        if self._offsets is None:
            self._offsets = Offsets(self.settings)
        return self._offsets

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
            self._read_outputs()
            self.result.seconds = time.perf_counter() - started
            self._summary()
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
            created = create_topics(self.settings)
            notes.append(
                f"created {len(created.created)} topics {self.config.prefix}* "
                f"({self.settings.topic_partitions} partitions each)"
            )

    def _prepare_events(self) -> _Events:
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

    def _spawn(self, name: str, command: str, settings: Settings) -> _Worker:
        logs = self.config.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        with open(log, "ab") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "churnstream.cli", command],
                env=child_env(settings),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the workers in order
            )
        (logs / f"{name}.pid").write_text(str(proc.pid))  # so a later demo can stop it if we are killed
        worker = _Worker(name, proc, log)
        self.workers.append(worker)
        return worker

    def _start_scorer(self) -> _Worker:
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
        self, events: _Events, lo: int, hi: int, directory: Path, desc: str, *, broken: bool = False
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
                    self._send_broken(events, lo, start)
                self._check_workers()
        finally:
            bar.close()

    def _send_broken(self, events: _Events, lo: int, at: int) -> None:
        """A careless producer (no validation) sends a few broken messages; they must become dead letters."""
        from churnstream.streams.kafka import DeliveryTracker, make_producer

        customer = orjson.loads(events.lines[lo])["customer_id"]
        producer = make_producer(self.settings)
        tracker = DeliveryTracker()
        messages = broken_messages(customer, at)
        for kind, key, value in messages:
            producer.produce(
                self.settings.topic_prefix + kind, value=value, key=key, on_delivery=tracker.on_delivery
            )
        tracker.flush_or_raise(producer)
        self.result.broken_sent = len(messages)

    def _check_workers(self) -> None:
        for worker in self.workers:
            worker.check()

    def _publish_history(self, events: _Events, split: int, scorer: _Worker) -> None:
        title = f"history {format_time(events.times[0])[:10]}..{format_time(self.train_until - 1)[:10]}"
        with self.console.step(title) as notes:
            self._publish(events, 0, split, self.config.work_dir / "replay" / "history", "publish history")
            self.result.events_history = split
            totals = self._catch_up(scorer, "scorer builds features")
            notes.append(
                f"published {split:,} events; the scorer built the features of every customer from them "
                f"({totals.get('predictions', 0):,} event predictions, {totals.get('sweeps', 0):,} sweeps)"
            )
        self.history_totals = totals

    def _start_monitor(self, events: _Events, split: int, end: int) -> _Worker | None:
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
            self.monitor_from = self.offsets.end([batches])
            commit_offsets(self.settings, self.monitor_group, self.monitor_from)
            monitor = self._spawn("monitor", "monitor", self.settings)
            self.result.monitor_started = True
            notes.append(
                f"churnstream monitor (pid {monitor.proc.pid}), windows of {rows:,} predictions or "
                f"{window_days:g} days, pages at http://{host}:{self.settings.web_port}/, log {monitor.log}"
            )
        return monitor

    def _replay(self, events: _Events, split: int, end: int) -> None:
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

    def _catch_up(self, scorer: _Worker, desc: str) -> dict[str, int]:
        """Wait until the scorer committed every input offset and its totals stopped moving (sweeps)."""
        topics = list(self.settings.topics.inputs)
        group = self.settings.consumer_group
        health = f"http://{self.settings.web_host}:{self.settings.metrics_port}/health"
        ends = self.offsets.end(topics)
        total = sum(ends.values())
        bar = self.console.progress(total, desc)
        deadline = time.monotonic() + self.config.timeout_s
        previous: dict[str, int] | None = None
        try:
            while True:
                scorer.check()
                committed = self.offsets.committed(group, list(ends))
                done = sum(min(committed.get(tp, 0), end) for tp, end in ends.items())
                state = get_json(health) or {}
                totals = state.get("totals") or {}
                watermark = state.get("watermark")
                bar.set(done, f"event time {format_time(watermark)[:10]}" if watermark else "")
                if done >= total and totals == previous:
                    return dict(totals)
                previous = dict(totals) if done >= total else None
                if time.monotonic() > deadline:
                    raise InfraError(
                        f"the scorer is still {total - done:,} messages behind after "
                        f"{self.config.timeout_s:.0f} s; "
                        f"last lines of {scorer.log}:\n{tail(scorer.log)}"
                    )
                time.sleep(1.0)
        finally:
            bar.close()

    def _wait_for_scorer(self, scorer: _Worker, title: str) -> None:
        with self.console.step(title) as notes:
            totals = self._catch_up(scorer, "scorer")
            notes.append(
                f"committed offsets == end offsets; {totals.get('events', 0):,} events, "
                f"{totals.get('predictions', 0):,} event predictions and "
                f"{totals.get('sweeps', 0):,} sweeps in all"
            )

    def _wait_for_monitor(self, monitor: _Worker | None) -> None:
        with self.console.step("monitor reports its windows") as notes:
            if monitor is None:
                notes.append("skipped (no monitor)")
                return
            batches = self.settings.topics.monitoring_batches
            ends = self.offsets.end([batches])
            health = f"http://{self.settings.web_host}:{self.settings.web_port}/health"
            start = self.monitor_from
            total = sum(ends.values()) - sum(start.values())
            bar = self.console.progress(total, "monitor", unit="batch")
            deadline = time.monotonic() + self.config.timeout_s
            stable = 0
            state: dict[str, Any] = {}
            try:
                while True:
                    monitor.check()
                    state = get_json(health) or {}
                    # how far it has read: its committed offsets stay behind the window still open
                    read = {
                        tp: int(state.get("read_offsets", {}).get(f"{tp[0]}/{tp[1]}", start.get(tp, 0)))
                        for tp in ends
                    }
                    done = sum(min(read[tp], end) - start.get(tp, 0) for tp, end in ends.items())
                    bar.set(
                        done,
                        f"{state.get('windows_reported', 0)} reports, "
                        f"{state.get('reports_pending', '?')} pending",
                    )
                    idle = bool(state) and state.get("reports_pending") == 0
                    stable = stable + 1 if done >= total and idle else 0
                    if stable >= 2:
                        break
                    if time.monotonic() > deadline:
                        raise InfraError(
                            f"the monitor did not finish within {self.config.timeout_s:.0f} s; "
                            f"last lines of {monitor.log}:\n{tail(monitor.log)}"
                        )
                    time.sleep(1.0)
            finally:
                bar.close()
            self.result.monitor_health = state
            notes.append(
                f"{state.get('windows_reported', 0)} windows reported, "
                f"{state.get('windows_skipped', 0)} skipped, "
                f"{state.get('rows_pending', 0):,} predictions in the window still open"
            )

    def _read_outputs(self) -> None:
        from churnstream.streams.alerts import read_topic

        topics = self.settings.topics
        split = self.train_until
        r = self.result
        with self.console.step("read the output topics") as notes:
            split_text = format_time(split)
            count = 0
            for _key, value in read_topic(self.settings, topics.churn_predictions):
                p = orjson.loads(value or b"{}")
                count += 1
                r.predictions[p["trigger"]] += 1
                if p["as_of"] >= split_text:
                    r.predictions_replay[p["trigger"]] += 1
            self.alerts: list[dict[str, Any]] = []
            alerted: set[str] = set()
            for _key, value in read_topic(self.settings, topics.churn_alerts):
                a = orjson.loads(value or b"{}")
                r.alerts += 1
                alerted.add(a["customer_id"])
                count += 1
                if a["as_of"] >= split_text:
                    r.alerts_replay += 1
                    if len(self.alerts) < 2000:
                        self.alerts.append(a)
            r.alerted_customers = len(alerted)
            self.letters = []
            for _key, value in read_topic(self.settings, topics.dead_letter):
                self.letters.append(orjson.loads(value or b"{}"))
                count += 1
            r.dead_letters = len(self.letters)
            for _key, value in read_topic(self.settings, topics.drift_reports):
                r.drift_reports.append(orjson.loads(value or b"{}"))
                count += 1
            outcomes: dict[str, tuple[int, float, float | None, float]] = {}
            for _key, value in read_topic(self.settings, topics.churn_outcomes):
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
            notes.append(f"{count:,} messages")

    # -- the summary -------------------------------------------------------------------------------
    def _summary(self) -> None:
        r = self.result
        s = self.settings
        say = self.console.say
        split = self.config.train_until[:10]
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
        say(
            f"  alerts        {r.alerts:,} for {r.alerted_customers:,} customers turning HIGH "
            f"(p >= {s.high_threshold:g}, at most one per {s.alert_cooldown_days:g} days), "
            f"{r.alerts_replay:,} in the replayed period; for example:"
        )
        for alert in pick_alerts(self.alerts, 3):
            say(_indent(_format_alert(alert), 16))
        stages = Counter(str(letter.get("stage")) for letter in self.letters)
        by_stage = ", ".join(f"{k} {v}" for k, v in sorted(stages.items()))
        say(
            f"  dead letters  {r.dead_letters} ({by_stage or 'none'}), "
            f"read them with: kcat -b {s.kafka_bootstrap} -C -t {s.topics.dead_letter} -e"
        )
        for letter in self.letters[:5]:
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
            say(
                f"  drift         {len(reports)} windows reported ({drifted} with dataset drift"
                f"{f', {skipped} skipped while reports fell behind' if skipped else ''}):"
            )
            for d in reports:
                say(f"                {_format_report(d)}")
            say(
                f"{' ' * 16}monitor pages: http://{s.web_host}:{s.web_port}/ "
                "(up while the monitor runs: --serve)"
            )
            say(f"                HTML reports:  {s.report_dir}/*.html")
            say(f"                Evidently UI:  .venv/bin/evidently ui --workspace {s.report_dir}/workspace")
        say(
            f"  ROC-AUC       on the outcomes of predictions as of {split} or later "
            "(labels the model never saw):"
        )
        for name in ("batch", "online", "blend"):
            auc = r.auc.get(name)
            shown = f"{auc:.3f}" if auc is not None else "n/a"
            say(f"                {name:<7} {shown}  ({r.auc_rows.get(name, 0):,} outcomes)")
        say(f"  logs          {self.config.work_dir}/logs/ (scorer.log, monitor.log)")

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
        auc[name] = _roc_auc(y, score)
    return auc, counts


def _roc_auc(y: Any, score: Any) -> float | None:
    """Mann-Whitney ROC-AUC with ties counted half; None without both classes."""
    from scipy.stats import rankdata

    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(score)
    return round(float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)), 4)


def pick_alerts(alerts: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` alerts whose top reasons differ, spread over the period."""
    picked: list[dict[str, Any]] = []
    seen: set[str] = set()
    step = max(len(alerts) // (4 * max(n, 1)), 1)
    for alert in alerts[::step]:
        reasons = alert.get("top_reasons") or [{}]
        top = str(reasons[0].get("feature"))
        if top in seen:
            continue
        seen.add(top)
        picked.append(alert)
        if len(picked) == n:
            return picked
    for alert in alerts:
        if len(picked) == n:
            break
        if alert not in picked:
            picked.append(alert)
    return picked


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


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


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
