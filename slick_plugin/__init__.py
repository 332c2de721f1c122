"""Slick Mapper: maps natural oil-seep slicks in Sentinel-1 SAR from QGIS.

A thin UI shell: all science runs in the engine's own Python process (see ``engine_runner.py``).
"""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    """QGIS's entry point: build the plugin for the running ``iface``."""
    from .plugin import SlickMapperPlugin

    return SlickMapperPlugin(iface)
