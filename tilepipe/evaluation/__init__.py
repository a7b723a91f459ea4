"""Scoring and reporting: Dice and threshold sweeps, the submission file, plots."""
