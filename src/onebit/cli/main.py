"""The ``onebit`` command: thin sub-commands over the library (one module each)."""

from __future__ import annotations

import errno
import logging
import os
import sys
import warnings

import typer

from . import bench_cmd, bwnh_cmd, data_cmd, deploy_cmd, eval_cmd, models_cmd, plot_cmd, summary_cmd, train_cmd

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="onebit: train, measure and deploy 1-bit (binary) neural networks.")
app.command("train")(train_cmd.train)
app.command("eval")(eval_cmd.eval_)
app.command("models")(models_cmd.models)
app.command("data")(data_cmd.data)
app.command("export")(deploy_cmd.export_)
app.command("run")(deploy_cmd.run)
app.command("summary")(summary_cmd.summary)
app.command("bench")(bench_cmd.bench)
app.command("plot")(plot_cmd.plot)
app.command("bwnh")(bwnh_cmd.bwnh)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; user errors print one clear line and exit 2."""
    from . import ARGV

    ARGV[:] = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # warnings for a person at a terminal: one line, not the library's source line
    saved, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return _run(argv)
    finally:
        warnings.formatwarning = saved


def _format_warning(message, category, *_args, **_kwargs) -> str:
    return f"onebit: warning: {message}\n"


def _run(argv: list[str] | None) -> int:
    from ..errors import user_errors

    try:
        rv = app(args=argv, standalone_mode=False)
    except user_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        typer.secho(f"onebit: error: {msg}", err=True, fg="red")
        return 2
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.secho("onebit: interrupted", err=True, fg="red")
        return 130
    except OSError as e:
        if e.errno not in _USER_OS_ERRORS or not e.filename:  # not about a path the user gave: a bug
            raise
        # a folder the user may not write to, a read-only or full disk: one line naming the path
        typer.secho(f"onebit: error: {e.strerror or e}: {e.filename}", err=True, fg="red")
        return 2
    except Exception as e:
        if _is_usage_error(e):
            e.show()
            return e.exit_code
        raise
    # standalone_mode=False: click hands back a command's typer.Exit(code) as the return value
    if rv == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into Exit(130); no command exits so itself
        typer.secho("onebit: interrupted", err=True, fg="red")
    return rv if isinstance(rv, int) else 0


# OSErrors that come from where the user pointed a command (not from a bug of ours)
_USER_OS_ERRORS = frozenset(getattr(errno, n) for n in ("EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENAMETOOLONG")
                            if hasattr(errno, n))


def _is_usage_error(e: BaseException) -> bool:
    """A click usage error (no such option, missing argument, bad value, no command given).

    Duck-typed on click's ``ClickException`` interface (``show()``, an integer ``exit_code``):
    older typer versions raise the ``click`` package's classes, newer ones (0.29 here) their own
    vendored copies, which do not derive from ``click.ClickException`` (and ``click`` may be absent).
    """
    return callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int)


def console() -> None:
    """The ``onebit`` executable and ``python -m onebit.cli.main``: :func:`main`, then exit with its code.

    A worker that torchrun started (``WORLD_SIZE`` set) ends through
    :func:`onebit.train.distributed.end_worker_process`, which skips the exit teardown in which gloo
    could abort a finished rank. (Not in :func:`main` itself: a program that calls it goes on.)
    """
    rc = main()
    if "WORLD_SIZE" in os.environ:  # no torch import for the other commands
        from ..train.distributed import end_worker_process

        end_worker_process(rc)
    sys.exit(rc)


if __name__ == "__main__":
    console()
