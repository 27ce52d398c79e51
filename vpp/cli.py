"""The ``vpp`` command line. Thin: parse arguments, call library code, print.

User errors (``VppError``) are printed as their one-line message and exit 2;
nothing a user can cause ends in a traceback.
"""

from __future__ import annotations

import logging
import sys

import typer

from vpp.cli_central import central_cmd
from vpp.cli_config import app as config_app
from vpp.cli_devices import app as devices_app
from vpp.cli_economics import app as economics_app
from vpp.cli_ledger import app as ledger_app
from vpp.cli_users import app as users_app
from vpp.cli_optimize import optimize_cmd, validate
from vpp.cli_portal import portal_cmd
from vpp.cli_simulate import simulate_cmd
from vpp.cli_run import run_cmd
from vpp.errors import VppError

# rich_markup_mode=None: usage errors print as click's plain "Usage: ... / Error: <one sentence>",
# not a boxed panel, on every typer version (0.29 vendors click, so its errors are not click's classes)
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False, help="Virtual power plant aggregation and dispatch engine.")
app.command("validate")(validate)
app.command("optimize")(optimize_cmd)
app.command("simulate")(simulate_cmd)
app.command("run")(run_cmd)
app.command("central")(central_cmd)
app.command("portal")(portal_cmd)
app.add_typer(devices_app, name="devices")
app.add_typer(economics_app, name="economics")
app.add_typer(ledger_app, name="ledger")
app.add_typer(users_app, name="users")
app.add_typer(config_app, name="config")


def main() -> None:
    """The console script. Typer runs standalone: it prints usage errors itself (usage line, one
    sentence, exit 2) and turns Ctrl-C into exit 130; what reaches here is the engine's own errors."""
    # warnings from library code (a price 1,000x off its unit) reach the user as "WARNING: ..." on
    # stderr; `vpp run` replaces this with its own log format
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        app(prog_name="vpp")
    except VppError as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
