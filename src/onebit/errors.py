"""The exceptions that mean "the user asked for something wrong" (printed as one line by the CLI)."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    from .data import DataError
    from .train import CheckpointError, TrainingError

    from .deploy import DeployError

    errs: list[type[BaseException]] = [DataError, CheckpointError, TrainingError, DeployError, KeyError,
                                       ValueError, TypeError, FileNotFoundError, FileExistsError,
                                       NotADirectoryError, IsADirectoryError]
    return tuple(errs)
