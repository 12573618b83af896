"""The ``onebit`` command line (one module per sub-command; :mod:`onebit.cli.main` is the entry point)."""

#: the arguments of the running command (after the program name), kept by ``main`` so that a
#: sub-command can re-launch itself (``onebit train --nproc N`` under torchrun)
ARGV: list[str] = []


def current_argv() -> list[str]:
    """A copy of :data:`ARGV`."""
    return list(ARGV)
