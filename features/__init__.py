"""Per-customer feature state and the one definition of every feature, plus the stores that keep it."""
