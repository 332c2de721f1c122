"""Slick Mapper's Processing algorithms, one per module; they run the same worker as the dock."""
