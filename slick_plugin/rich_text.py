"""Plain text (engine messages, file paths) made safe to show in a rich-text QLabel."""

from __future__ import annotations


def html_text(text: str) -> str:
    """``text`` with HTML special characters escaped and its line breaks kept."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
