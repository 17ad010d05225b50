"""Where the reference data of a model version comes from, and its preparation (once per version).

A :class:`ReferenceSource` answers "what did the data look like when model version v was trained?" with
a DataFrame of feature columns and ``churn_probability`` (held-out data), or None when it does not know.
:class:`RegistrySource` asks the model registry (``registry.load(version).reference``);
:class:`FrameSource` returns one DataFrame it was given (tests, benchmarks, notebooks).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from churnstream.errors import ChurnstreamError

log = logging.getLogger(__name__)


class ReferenceSource(Protocol):
    """Gives the reference DataFrame of a model version, or None."""

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
    (``models.registry.ModelRegistry``). A version the registry does not have gives None.
    """

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def reference(self, model_version: str) -> Any | None:
        try:
            loaded = self.registry.load(model_version)
        except (ChurnstreamError, FileNotFoundError, KeyError) as exc:
            log.warning("no reference for model version %s in the registry: %s", model_version, exc)
            return None
        frame = getattr(loaded, "reference", None)
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
        self._datasets: dict[tuple[str, ...], Any] = {}

    @property
    def rows(self) -> int:
        return len(self.frame)

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
