"""`vpp economics ...` subcommands: print what ``vpp.economics`` computes, as tables or as one JSON object."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from vpp.economics.market import ScaleBy
from vpp.cli_output import console
from vpp.errors import InputError

if TYPE_CHECKING:
    from vpp.economics.transfer import TransferResult

app = typer.Typer(no_args_is_help=True, help="economics commands.")


@app.command("transfer-factor")
def transfer_factor(
    case: Annotated[Path, typer.Option("--case", help="economics case YAML (costs, finance, market, payers)")],
    from_simulation: Annotated[
        Path | None, typer.Option("--from-simulation", help="take C_market from this `vpp simulate` output folder")
    ] = None,
    scale_by: Annotated[
        ScaleBy, typer.Option("--scale-by", help="scale simulated revenue to the station by energy, power or none")
    ] = ScaleBy.ENERGY,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="write the λ-sensitivity plot to this PNG")] = None,
) -> None:
    """Price an independent storage station's capacity with a transfer factor λ: the feasible λ interval and IRRs."""
    # Imported here so that every other `vpp` command starts without scipy and matplotlib.
    from vpp.economics.case import load_case, read_simulation_summary
    from vpp.economics.plot import plot_sensitivity
    from vpp.economics.transfer import analyse_transfer_factor

    economics_case = load_case(case)
    summary = None if from_simulation is None else read_simulation_summary(from_simulation, economics_case.currency)
    result = analyse_transfer_factor(economics_case, summary, scale_by)
    if plot is not None:
        if result.sensitivity is None:
            expected = "no --from-simulation (the sensitivity needs the case's cycle formula)"
            raise InputError("command line", "--plot", str(plot), expected)
        plot_sensitivity(result.sensitivity, result.currency, plot)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(result), ensure_ascii=False, allow_nan=False))
    else:
        _print_report(result)


def _money(amount: float) -> str:
    return f"{amount:,.0f}"


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.2%}"


def _print_report(result: TransferResult) -> None:
    out = console()
    market, cur = result.market, result.currency
    residual = "returned in the final year" if result.residual_in_final_year else "not returned"
    out.print(f"[bold]{result.name}[/bold] — amounts in {cur} per year unless noted")
    out.print(f"investment C_inv: {_money(result.investment)} {cur}")
    out.print(f"annualized capacity cost C_annual: {_money(result.annual_capacity_cost)}")
    out.print(
        f"market net revenue C_market: {_money(market.net_annual)} = {market.source} {_money(market.streams_annual)}"
        f" + regulation {_money(market.regulation_annual)} − O&M {_money(market.om_annual)}"
    )
    out.print(
        f"station income for IRR {_percent(result.target_irr)}: {_money(result.required_income)}"
        f" (residual value {residual})"
    )

    table = Table(title="payers' ceilings (the most each pays per year)")
    for header in ("payer", "ceiling", "= sum of"):
        table.add_column(header, justify="right" if header == "ceiling" else "left")
    for ceiling in result.ceilings:
        terms = (f"{'−' if amount < 0 else '+'} {_money(abs(amount))} {label}" for label, amount in ceiling.components)
        table.add_row(f"{ceiling.group}: {ceiling.name}", _money(ceiling.ceiling), " ".join(terms).removeprefix("+ "))
    out.print(table)

    table = Table(title="λ grid")
    for header in ("λ", "", "station income", "IRR", "renewables pay", "grid pays", "feasible"):
        table.add_column(header, justify="left" if header in ("", "feasible") else "right")
    for point in result.points:
        table.add_row(
            f"{point.transfer_factor:.4f}",
            ", ".join(point.labels),
            _money(point.station_income),
            _percent(point.irr),
            _money(point.renewable_payment),
            _money(point.grid_payment),
            "yes" if point.feasible else "no",
        )
    out.print(table)

    at_zero = next(p for p in result.points if "λ = 0" in p.labels)
    out.print(f"IRR at λ = 0: {_percent(at_zero.irr)}")
    if result.interval is None:
        out.print(f"[bold red]no feasible λ[/bold red]: {result.infeasible_reason}")
    else:
        low, high = result.interval.lower, result.interval.upper
        out.print(
            f"[bold green]feasible λ interval[/bold green]: {low.transfer_factor:.4f} ≤ λ ≤ {high.transfer_factor:.4f}"
            f" (lower end set by {low.reason}; upper end by {high.reason})"
        )

    if result.sensitivity is not None:
        sensitivity = result.sensitivity
        title = f"λ at which IRR = {_percent(sensitivity.target_irr)} (rows: cycles/yr; columns: spread {cur}/kWh)"
        table = Table(title=title)
        table.add_column("cycles/yr", justify="right")
        for spread in sensitivity.spreads_per_kwh:
            table.add_column(f"{spread:g}", justify="right")
        for cycles, row in zip(sensitivity.cycles_per_year, sensitivity.transfer_factor_needed):
            table.add_row(f"{cycles:g}", *("n/a" if value is None else f"{value:.3f}" for value in row))
        out.print(table)
    for note in result.notes:
        out.print(f"note: {note}")
