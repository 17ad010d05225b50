"""churnstream: streaming churn scoring and drift monitoring on Kafka and Redis.

The public surface is what ``__all__`` lists; everything else (``churnstream.streams``, ``.features``,
``.models``, ``.monitoring`` and their modules) is internal and may change between releases.

- settings: :class:`Settings` (every ``CHURN_*`` variable, :meth:`Settings.from_env`);
- the input contract: :class:`OrderEvent`, :class:`TicketEvent`, :class:`ProfileEvent`,
  :class:`LabelEvent`, :func:`parse_event` (validation), :func:`decode_json`, :func:`parse_time`,
  :func:`format_time`;
- the output messages: :class:`Prediction`, :class:`Alert`, :class:`Reason`, :class:`Outcome`,
  :class:`DriftReport`, :class:`DeadLetter`;
- the error tree rooted at :class:`ChurnstreamError` (see :mod:`churnstream.errors`);
- features and scores: :data:`FEATURE_NAMES`, :func:`features_as_of` (a customer's features from their
  state), :class:`RedisFeatureStore` (the state the workers keep: ``features(customer_id, as_of)``) and
  :class:`ModelRegistry` (``load()`` gives the current model; its ``model.predict_proba`` scores rows
  made by ``model.vectorize``). These last three import numpy, scikit-learn or redis, so they load on
  first use.

>>> import churnstream
>>> event = churnstream.parse_event("orders", {"event_id": "e1", "customer_id": "c1", "order_id": "o1",
...     "timestamp": "2024-05-01T10:00:00Z", "amount": 12.5}, now_ms=1_800_000_000_000)
>>> isinstance(event, churnstream.OrderEvent), "recency_days" in churnstream.FEATURE_NAMES
(True, True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from churnstream.errors import (
    ChurnstreamError,
    ConfigError,
    DecodeError,
    EventError,
    InfraError,
    ModelError,
    ModelIntegrityError,
    ModelNotFoundError,
    ProcessingError,
    PublishError,
    StoreError,
    ValidationError,
)
from churnstream.events import (
    Event,
    LabelEvent,
    OrderEvent,
    ProfileEvent,
    TicketEvent,
    decode_json,
    format_time,
    parse_event,
    parse_time,
)
from churnstream.messages import Alert, DeadLetter, DriftReport, Outcome, Prediction, Reason
from churnstream.settings import Settings

if TYPE_CHECKING:
    from churnstream.features.definitions import FEATURE_NAMES, features_as_of
    from churnstream.features.redis_store import RedisFeatureStore
    from churnstream.models.registry import ModelRegistry

_LAZY = {
    "FEATURE_NAMES": "churnstream.features.definitions",
    "features_as_of": "churnstream.features.definitions",
    "RedisFeatureStore": "churnstream.features.redis_store",
    "ModelRegistry": "churnstream.models.registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'churnstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "FEATURE_NAMES",
    "Alert",
    "ChurnstreamError",
    "ConfigError",
    "DeadLetter",
    "DecodeError",
    "DriftReport",
    "Event",
    "EventError",
    "InfraError",
    "LabelEvent",
    "ModelError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "ModelRegistry",
    "OrderEvent",
    "Outcome",
    "Prediction",
    "ProcessingError",
    "ProfileEvent",
    "PublishError",
    "Reason",
    "RedisFeatureStore",
    "Settings",
    "StoreError",
    "TicketEvent",
    "ValidationError",
    "__version__",
    "decode_json",
    "features_as_of",
    "format_time",
    "parse_event",
    "parse_time",
]
