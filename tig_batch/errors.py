"""The exceptions tig-batch raises for problems a user can fix.

The CLI turns a :class:`TigBatchError` into a one-line message and exit code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TigBatchError(Exception):
    """Base class: bad input, bad configuration, or a file that cannot be used."""


class DataError(TigBatchError, ValueError):
    """A dataset, shard or array is malformed, corrupt or out of range. Names the file."""


class ModelError(TigBatchError, ValueError):
    """A model, checkpoint or bundle is missing, inconsistent or unsupported."""
