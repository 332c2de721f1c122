"""Reading a scene onto the analysis grid: the file and its value scale (``raster``), the UTM grid and GCP
geocoding (``grid``), the eq. 1 stretch (``normalise``), the tile lattice (``tiling``), which pixels
detection may look at (``landmask``: land, coasts, no-data borders), reading ahead of the model
(``prefetch``) and GDAL's block cache, bounded for every pass (``block_cache``)."""
