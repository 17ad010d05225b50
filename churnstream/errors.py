"""The one exception tree of churnstream.

::

    ChurnstreamError
    ├── ConfigError                 bad or missing settings
    │   ├── UsageError              a command given arguments it cannot take (exit 2, as a bad flag)
    │   ├── FencedError             another member took this worker's static group id
    │   └── LayoutError             Redis holds state in another layout (``churnstream rebuild``)
    ├── InfraError                  local Kafka/Redis could not be installed, started or reached
    ├── EventError                  one message that cannot be processed (goes to dead_letter)
    │   ├── DecodeError             not UTF-8, not JSON, too large, not an object
    │   ├── ValidationError         breaks a rule of the contract
    │   └── ProcessingError         valid, but could not be applied (e.g. later than the retained history)
    ├── PublishError                records were not delivered
    ├── StoreError                  the feature store failed (Redis down, conflicting writer)
    ├── StateLostError              Redis lost state that Kafka says was processed (stops a worker)
    └── ModelError                  training, registry or scoring problems
        ├── ModelNotFoundError      no such model version / no current model
        └── ModelIntegrityError     artifact sha256 does not match its metadata

``EventError`` carries the ``stage`` that ends up in the dead-letter record.
"""

from __future__ import annotations


class ChurnstreamError(Exception):
    """Root of every error churnstream raises on purpose."""


class ConfigError(ChurnstreamError):
    """A setting is missing or malformed."""


class UsageError(ConfigError):
    """A command was given arguments it cannot take together, or lacks one it needs (exit status 2, as
    for a flag argparse refuses)."""


class FencedError(ConfigError):
    """The broker fenced this worker out of its consumer group: another member joined under its
    ``group.instance.id``. Once, it may be the worker's own rejoin after an outage; again, another
    process has the same ``CHURN_WORKER_ID``."""


class LayoutError(ConfigError):
    """Redis holds feature state in a layout this version does not read (older, newer, or written for
    another number of input partitions): the message names the command that rebuilds it."""


class InfraError(ChurnstreamError):
    """Local infrastructure (Java, Maven, Kafka, Redis) is missing or failed to start."""


class EventError(ChurnstreamError):
    """A single message that cannot be processed; the worker dead-letters it and goes on."""

    stage = "process"


class DecodeError(EventError):
    """The bytes are not a UTF-8 JSON object within the size limit."""

    stage = "decode"


class ValidationError(EventError):
    """The JSON object breaks a rule of the contract."""

    stage = "validate"


class ProcessingError(EventError):
    """A valid event that could not be applied."""

    stage = "process"


class PublishError(ChurnstreamError):
    """Some records were not delivered to Kafka."""


class StoreError(ChurnstreamError):
    """The feature store could not complete an operation."""


class ModelError(ChurnstreamError):
    """Training, loading or scoring a model failed."""


class ModelNotFoundError(ModelError):
    """The requested model version (or a current one) does not exist."""


class ModelIntegrityError(ModelError):
    """An artifact's sha256 does not match the one recorded when it was registered."""


class StateLostError(ChurnstreamError):
    """Redis has no state for partitions that Kafka says were processed: it lost its data. The worker
    stops rather than carry on without it (``churnstream rebuild`` restores it from the input topics)."""
