"""Test-time views of a tile: the mirror images (and rotations) detection averages a model's probability over.

Kept apart from ``inference`` and ``eager`` so that both can name them without the one importing PyTorch for
the other: ``inference`` serves the exported runtimes too and loads ``eager`` only when a PyTorch network runs."""

FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
"""Test-time views of a batch of tiles (rows and columns last): as is, mirrored left-right, top-bottom, and both."""

HALF_TURN: tuple[tuple[int, ...], ...] = ((), (-2, -1))
"""The tile as is and turned by 180 degrees (mirrored along both axes): of the mirror images, the pair that differ
along both axes, for half mirror averaging's work."""

View = tuple[bool, tuple[int, ...]]
"""A test-time view: transposed first or not, then mirrored along these axes (rows and columns last)."""
