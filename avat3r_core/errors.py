"""Errors that name what went wrong and where.

A researcher running 256 subjects x 80 cameras needs one line that says which subject, camera, frame and
file broke, not a traceback from deep inside a zip reader. Every error the pipeline raises on purpose is an
`Avat3rError`; the command line prints it as a single line and exits with status 1.
"""

from __future__ import annotations

from pathlib import Path


class Avat3rError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class ConfigError(Avat3rError):
    """A config value is missing, of the wrong type or out of range; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {message}")


class CaptureError(Avat3rError):
    """Bad or unreadable capture data; the message names subject, camera, frame and file where known."""

    def __init__(
        self,
        message: str,
        *,
        subject: str | None = None,
        camera: str | None = None,
        frame: int | None = None,
        file: str | Path | None = None,
    ) -> None:
        self.subject, self.camera, self.frame, self.file = subject, camera, frame, file
        where = [
            f"{name} {value}"
            for name, value in (("subject", subject), ("camera", camera), ("frame", frame), ("file", file))
            if value is not None
        ]
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class MissingImageError(CaptureError):
    """An image listed in the frame list is absent from the capture (Ava-256 drops about 0.1%)."""
