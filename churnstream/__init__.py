"""churnstream: streaming churn scoring and drift monitoring on Kafka and Redis.

The core package holds what every other package shares — settings, the exception tree,
the typed event contract and time handling — plus the command line that wires them.
"""

from __future__ import annotations

__version__ = "0.1.0"
