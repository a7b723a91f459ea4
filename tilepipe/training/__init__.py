"""Training one fold: the recipe's loop, resumable and reproducible."""
