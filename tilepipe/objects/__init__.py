"""Objects: glomeruli as connected components of a predicted mask, their outlines and measurements."""
