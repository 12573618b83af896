"""Exceptions raised by :mod:`onebit.data`.

Every message names the file or data set concerned, says what is wrong and,
where there is one, how to fix it, so that the command line can print it as is.
"""

from __future__ import annotations

__all__ = ["DataError", "DataNotFoundError", "CorruptDataError"]


class DataError(Exception):
    """Base class of every data-set error (bad name, bad file, missing data...)."""


class DataNotFoundError(DataError):
    """The files of a data set were found in none of the places looked in.

    The message lists every place looked in and how to get the data.
    """


class CorruptDataError(DataError):
    """A data file is truncated, corrupt, has a bad magic number or checksum,
    or is not of the expected kind (e.g. a pickle asking to run code)."""
