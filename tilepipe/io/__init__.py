"""Reading inputs as users have them: slide TIFFs, the Kaggle data folder, RLE masks, polygon files."""
