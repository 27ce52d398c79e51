"""The ``vpp`` command line. Thin: parse arguments, call library code, print.

User errors (``VppError``) are printed as their one-line message and exit 2;
nothing a user can cause ends in a traceback.
"""

from __future__ import annotations

import sys

import typer

from vpp.cli_devices import app as devices_app
from vpp.cli_economics import app as economics_app
from vpp.cli_ledger import app as ledger_app
from vpp.cli_optimize import optimize_cmd, validate
from vpp.cli_simulate import simulate_cmd
from vpp.cli_run import run_cmd
from vpp.errors import VppError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Virtual power plant aggregation and dispatch engine.")
app.command("validate")(validate)
app.command("optimize")(optimize_cmd)
app.command("simulate")(simulate_cmd)
app.command("run")(run_cmd)
app.add_typer(devices_app, name="devices")
app.add_typer(economics_app, name="economics")
app.add_typer(ledger_app, name="ledger")


def main() -> None:
    try:
        app(standalone_mode=False)
    except VppError as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
