"""Scenes: what is read, where it lies, and which of its pixels detection may look at."""
