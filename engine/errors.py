"""Typed engine errors, one base class, each message saying what is wrong and what to do.

The CLI and the plugin show ``str(error)`` as it is, so messages are written for an analyst.
"""


class SlickMapperError(Exception):
    """Base of every error the engine raises on purpose; anything else is a bug."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class InputError(SlickMapperError):
    """The scene, label or vector file given cannot be used as it is."""

    exit_code = 2


class ModelError(SlickMapperError):
    """The model file is missing, unreadable, or made for other data than the scene."""

    exit_code = 2


class OutputError(SlickMapperError, OSError):
    """An output cannot be written (permissions, space, or it exists already)."""

    exit_code = 2


class ResourceError(SlickMapperError):
    """The job would not fit in memory or on the chosen device."""

    exit_code = 2


class Cancelled(SlickMapperError):
    """The user asked the job to stop; whatever it was writing has been removed."""

    exit_code = 130

    def __init__(self, message: str = "Cancelled by the user.") -> None:
        super().__init__(message)
