"""Whole-slide inference: window geometry, the TTA ensemble, stitched prediction, pseudo-labels."""
