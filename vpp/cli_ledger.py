"""`vpp ledger ...`: a month's settled revenue by contract, unit or stream; closing a month's statement."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

    from vpp.config import VppConfig


class ReportBy(str, enum.Enum):
    CONTRACT = "contract"
    UNIT = "unit"
    STREAM = "stream"


app = typer.Typer(no_args_is_help=True, help="revenue ledger commands.")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="the config YAML (contracts, currency, time zone)")]
MonthOpt = Annotated[str, typer.Option("--month", help="billing month YYYY-MM, in the config's time zone")]
DbOpt = Annotated[str | None, typer.Option("--db", help="database URL or SQLite path; default: the daemon's (daemon.database, else the .db file beside the config)")]


@app.command("report")
def report(
    config: ConfigOpt,
    month: MonthOpt,
    by: Annotated[ReportBy, typer.Option("--by", help="contract (party shares), unit or stream")] = ReportBy.CONTRACT,
    as_csv: Annotated[bool, typer.Option("--csv", help="write CSV to stdout instead of a table")] = False,
    db: DbOpt = None,
) -> None:
    """Totals of a month's settled intervals; amounts are exact (integer minor units)."""
    from vpp.ledger.report import ledger_report, month_bounds

    month_bounds(month, "UTC")  # a malformed month is the first thing to report, before any database is opened
    cfg, engine = _open(config, db)
    frame = ledger_report(engine, cfg.contracts, month, cfg.timezone, by.value)
    _print(frame, cfg.currency, f"{cfg.name} ledger {month} by {by.value} ({cfg.currency}, {cfg.timezone})", as_csv)


@app.command("close")
def close(config: ConfigOpt, month: MonthOpt, db: DbOpt = None) -> None:
    """Record the month's statement (contract × party × item). Closing again is a no-op if nothing
    changed, and an error if the settled amounts have changed since."""
    import pandas as pd

    from vpp.errors import InputError
    from vpp.ledger.report import month_bounds, month_split
    from vpp.ledger.store import record_statement

    month_bounds(month, "UTC")  # a malformed month is the first thing to report, before any database is opened
    cfg, engine = _open(config, db)
    end = month_bounds(month, cfg.timezone)[1]
    if pd.Timestamp.now(tz="UTC") < end:  # its last intervals are not settled yet
        raise InputError("--month", "month", month, f"a month that has ended (this one ends at {end.tz_convert(cfg.timezone)})")
    split = month_split(engine, cfg.contracts, month, cfg.timezone)
    new = record_statement(engine, month, split)
    print(f"ok: {month}: statement of {split['contract_id'].nunique()} contracts, {new} new rows of {len(split)}")


def _open(config: Path, db: str | None) -> tuple[VppConfig, Engine]:
    from vpp.config import load_config
    from vpp.db import default_database, open_database
    from vpp.errors import InputError

    cfg = load_config(config)
    if db is not None:
        return cfg, open_database(db)
    # the daemon's database: its `daemon.database` setting, else the SQLite file beside the config
    target = cfg.daemon.database_target(config) if cfg.daemon is not None else str(default_database(config))
    if "://" not in target and not Path(target).is_file():
        raise InputError(str(config), "--db", target, "an existing ledger database (run `vpp run` first, or pass --db)")
    return cfg, open_database(target)


def _print(frame: pd.DataFrame, currency: str, title: str, as_csv: bool) -> None:
    from vpp.ledger.money import format_minor

    shown = frame.copy()
    shown["amount"] = [format_minor(v, currency) for v in shown["amount_minor"]]
    if as_csv:
        typer.echo(shown.to_csv(index=False), nl=False)
        return
    from vpp.cli_output import console
    from rich.table import Table

    table = Table(title=title)
    columns = [c for c in shown.columns if c != "amount_minor"]
    for c in columns:
        table.add_column(c, justify="right" if c in ("amount", "intervals") else "left")
    for row in shown[columns].itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    table.add_row("[bold]total[/bold]", *([""] * (len(columns) - 2)), f"[bold]{format_minor(int(frame['amount_minor'].sum()), currency)}[/bold]")
    console().print(table)
