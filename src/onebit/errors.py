"""The exceptions that mean "the user asked for something wrong" (printed as one line by the CLI)."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    from .data import DataError
    from .train import CheckpointError, TrainingError

    errs: list[type[BaseException]] = [DataError, CheckpointError, TrainingError, KeyError, ValueError,
                                       FileNotFoundError]
    try:
        from .deploy import DeployError  # type: ignore[attr-defined]

        errs.append(DeployError)
    except ImportError:
        pass
    return tuple(errs)
