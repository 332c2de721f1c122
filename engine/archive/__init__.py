"""Archives of scenes: batch detection on Dask, the slick catalogue, seep sites and look-alike evidence.

A seep is a place whose slicks come back scene after scene, so the unit of analysis here is many scenes:
``batch`` runs detection over an archive and records every scene in a manifest, ``catalogue`` gathers all
slicks and scene footprints into one table, ``seeps`` groups slicks of different scenes into sites.
"""
