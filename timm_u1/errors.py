"""Errors that name a problem of the user's input, and its fix.

Library code raises these (or the built-in ``ValueError`` / ``OSError`` family where Python's own
meaning fits); :func:`timm_u1.cli.main` turns every one of them into a single line on stderr and
exit code 1. Anything else is a bug, and the command line says so.
"""

__all__ = ['TimmU1Error', 'ResumeMismatchError', 'RunLockedError', 'OutputNotWritableError']


class TimmU1Error(Exception):
    """Base class of timm_u1's own errors."""


class ResumeMismatchError(TimmU1Error, ValueError):
    """A run folder holds an unfinished run made with other settings than the run resuming it."""


class RunLockedError(TimmU1Error, RuntimeError):
    """Another live process is writing to the same run folder."""


class OutputNotWritableError(TimmU1Error, OSError):
    """The output path cannot be written: checked before any work starts."""
