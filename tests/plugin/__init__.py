"""Tests of the QGIS plugin (slick_plugin/), in a real offscreen QgsApplication."""
