"""Drift windows, Evidently reports, concept-drift detectors and metrics."""
