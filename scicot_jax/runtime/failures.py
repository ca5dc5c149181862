"""Failures the binaries turn into exit codes, defined below the rooms that raise them."""


class RunFailed(RuntimeError):
    """A run that started and failed on its own (e.g. a non-finite loss): exit code 1."""
