"""The papers' experiments and the demo on the bundled real tiles; ``cli`` holds the ``experiment`` command.
No product module imports from here."""
