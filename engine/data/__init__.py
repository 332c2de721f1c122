"""Data the engine makes or ships: synthetic scenes (``synth``) and the bundled real tiles (``bundled``)."""
