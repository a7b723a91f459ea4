"""tilepipe: giant whole-slide TIFFs to a segmentation ensemble and a Kaggle submission."""

__version__ = "0.1.0"
