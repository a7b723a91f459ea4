"""From slides to training samples: ingest, tissue, tile index, folds, sampling, preprocessing, augmentation."""
