"""The ``onebit`` command: thin sub-commands over the library (one module each)."""

from __future__ import annotations

import logging
import sys

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
    from ..errors import user_errors

    from . import ARGV

    ARGV[:] = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        app(args=argv, standalone_mode=False)
    except user_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        typer.secho(f"onebit: error: {msg}", err=True, fg="red")
        return 2
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return 130
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
