"""Noise curricula: training step -> probability that a search returns noisy documents."""
