"""Batch training, the model registry, the online River learner, blending and explanations."""
