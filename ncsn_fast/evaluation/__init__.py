"""Evaluation helpers. Today: a digits classifier that scores samples of the bundled digits model."""
