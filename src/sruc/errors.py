"""Exceptions raised by sruc.

The library never prints or exits: it raises a :class:`SrucError` subclass whose
message says what went wrong and what to do about it, in one line. The CLI turns
these into one line on stderr and an exit code (see ``exit_code``).
"""

from __future__ import annotations


class SrucError(Exception):
    """Base class of every error sruc raises on purpose.

    Attributes:
        exit_code: the process exit code the CLI uses: 1 for a runtime failure,
            2 for a usage error (a bad argument value), 130 when stopped by a signal.
    """

    exit_code: int = 1


class UsageError(SrucError, ValueError):
    """An argument value that can never work (a scale of 100, an unknown format)."""

    exit_code = 2


class InputError(SrucError):
    """An input file that is missing, unreadable, not an image, or too large."""


class OutputError(SrucError):
    """An output that cannot or must not be written."""


class ModelError(SrucError):
    """An unknown model name, a corrupt checkpoint, or no weights for a scale."""


class DownloadError(ModelError):
    """A weights file could not be downloaded (network, HTTP error, or offline)."""


class ChecksumError(DownloadError):
    """A file's bytes do not have the SHA-256 they are pinned to."""


class DeviceError(SrucError):
    """A requested device that is not available."""


class Stopped(SrucError):
    """The work was stopped by Ctrl-C (SIGINT) or SIGTERM (exit 130); the message says what
    was kept and how to resume. Nothing half-written is left behind."""

    exit_code = 130


class SrucWarning(UserWarning):
    """Something the user should know about that does not stop the work.

    Emitted with :func:`warnings.warn`; the CLI prints these on stderr.
    """
