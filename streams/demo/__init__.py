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

The package's modules: :mod:`.config` (what a run is told and what it saw), :mod:`.runner` (the steps
and ``churnstream demo``), :mod:`.events` (the events published), :mod:`.cleanup` (a clean start),
:mod:`.watch` (waiting for the workers to catch up), :mod:`.report` (the topics read back and the
summary) and :mod:`.console` (step lines and progress bars). Workers are launched and stopped with
:mod:`churnstream.streams.processes`.
"""

from __future__ import annotations

from churnstream.streams.demo.cleanup import clear_previous, stop_leftover_workers
from churnstream.streams.demo.config import DemoConfig, DemoResult
from churnstream.streams.demo.report import held_out_auc, pick_alerts
from churnstream.streams.demo.runner import Demo, cli, run_demo

__all__ = [
    "Demo",
    "DemoConfig",
    "DemoResult",
    "clear_previous",
    "cli",
    "held_out_auc",
    "pick_alerts",
    "run_demo",
    "stop_leftover_workers",
]
