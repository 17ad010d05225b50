"""Where the reference data of a model version comes from, and its preparation (once per version).

A :class:`ReferenceSource` answers "what did the data look like when model version v was trained?" with
a DataFrame of feature columns and ``churn_probability`` (held-out data), or None when it does not know.
:class:`RegistrySource` asks the model registry (``registry.load(version).reference``);
:class:`FrameSource` returns one DataFrame it was given (tests, benchmarks, notebooks).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any, Protocol

import numpy as np

from churnstream.errors import ChurnstreamError
from churnstream.monitoring.stattests import ReferenceStats

log = logging.getLogger(__name__)


class ReferenceSource(Protocol):
    """Gives the reference DataFrame of a model version, or None.

    A source may also have ``unknown(model_version) -> str | None``: the reason why records of that
    version are refused (they go to ``dead_letter``), or None when the version is acceptable.
    """

    def reference(self, model_version: str) -> Any | None: ...


class FrameSource:
    """The same DataFrame for every model version."""

    def __init__(self, frame: Any) -> None:
        self.frame = frame

    def reference(self, model_version: str) -> Any | None:
        return self.frame


class RegistrySource:
    """The ``reference`` of a registered model: ``registry.load(version).reference``.

    ``registry`` is anything with ``load(version)`` returning an object with a ``reference`` DataFrame
    and ``versions()`` listing the registered versions (``churnstream.models.registry.ModelRegistry``). A
    version the registry does not have gives None.

    :meth:`unknown` refuses a version the registry does not list, once it lists any: the scorer only
    serves registered versions, so such a record is broken or forged. A monitor whose registry is empty
    (or not mounted) accepts every version and takes each one's reference from its first windows.
    """

    def __init__(self, registry: Any, *, relist_seconds: float = 1.0) -> None:
        self.registry = registry
        self.relist_seconds = relist_seconds
        self._known: set[str] = set()
        self._listed_at = -math.inf

    def unknown(self, model_version: str) -> str | None:
        if model_version in self._known:
            return None
        now = time.monotonic()
        if now - self._listed_at >= self.relist_seconds:  # a version promoted since the last look
            self._listed_at = now
            try:
                self._known = set(self.registry.versions())
            except (ChurnstreamError, OSError) as exc:
                log.warning("cannot list the model registry: %s", exc)
        if not self._known or model_version in self._known:
            return None
        listed = sorted(self._known)
        shown = ", ".join(listed[-5:]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
        return f"unknown model version {model_version!r}: the registry has {shown}"

    def reference(self, model_version: str) -> Any | None:
        try:
            loaded = self.registry.load(model_version)
        except (ChurnstreamError, FileNotFoundError, KeyError) as exc:
            log.warning("no reference for model version %s in the registry: %s", model_version, exc)
            return None
        try:  # read on first use: a truncated or foreign file fails here, and must not cost the batch
            frame = getattr(loaded, "reference", None)
        except Exception as exc:
            log.warning(
                "model version %s: its reference data cannot be read (%s: %s); the reference is taken from "
                "the stream instead",
                model_version,
                type(exc).__name__,
                exc,
            )
            return None
        if frame is None or len(frame) == 0:
            log.warning("model version %s has no reference data", model_version)
            return None
        return frame


class PreparedReference:
    """A reference DataFrame as floats, sampled down to ``max_rows``, with Evidently datasets cached.

    Building the Evidently ``Dataset`` of the reference once per column set (not once per window) keeps
    the per-window cost to the current data.
    """

    def __init__(self, frame: Any, *, model_version: str, source: str, max_rows: int = 20_000, seed: int = 0):
        import pandas as pd

        if len(frame) > max_rows:
            frame = frame.sample(n=max_rows, random_state=seed)
        numeric = {}
        for column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            if values.notna().any():
                numeric[column] = values.astype("float64")
        self.frame = pd.DataFrame(numeric).reset_index(drop=True)
        self.model_version = model_version
        self.source = source
        self.key = f"{model_version}:{source}:{uuid.uuid4().hex[:8]}"
        self._datasets: dict[tuple[str, ...], Any] = {}
        self._stats: ReferenceStats | None = None

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def stats(self) -> ReferenceStats:
        """The reference side of the in-process drift tests (sorted columns), built on first use."""
        if self._stats is None:
            self._stats = ReferenceStats({c: self.frame[c].to_numpy() for c in self.frame.columns})
        return self._stats

    def usable(self, columns: list[str]) -> list[str]:
        """The columns of ``columns`` that the reference has with at least one value."""
        return [c for c in columns if c in self.frame.columns and bool(np.isfinite(self.frame[c]).any())]

    def dataset(self, columns: tuple[str, ...]) -> Any:
        """The Evidently ``Dataset`` of these reference columns (built once)."""
        ds = self._datasets.get(columns)
        if ds is None:
            from evidently import DataDefinition, Dataset

            ds = Dataset.from_pandas(
                self.frame[list(columns)], data_definition=DataDefinition(numerical_columns=list(columns))
            )
            self._datasets[columns] = ds
        return ds
