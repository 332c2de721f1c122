"""Slick Mapper engine: everything scientific and every file it reads or writes.

It never imports Qt or QGIS, so the CLI, the tests, batch jobs and the QGIS plugin's worker process
all run the same code.
"""

__version__ = "0.1.0"
