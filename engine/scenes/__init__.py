"""Reading a scene onto the analysis grid: the file and its value scale (``raster``), the UTM grid and GCP
geocoding (``grid``), the eq. 1 stretch (``normalise``) and the tile lattice (``tiling``)."""
