"""Zarr stores on disk: chunk files, the NGFF pyramid writer, slide stores and probability stores."""
