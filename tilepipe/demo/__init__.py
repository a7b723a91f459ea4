"""The embedded demo: a synthetic dataset in the Kaggle layout (plan, render, write)."""
