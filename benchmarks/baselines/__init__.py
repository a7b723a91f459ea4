"""Baselines re-implemented from the articles in ``../shared/articles``, for side-by-side benchmarks."""
