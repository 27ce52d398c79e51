"""``vpp config schema`` and ``vpp config reference``: what a config may contain, for editors and people."""

from __future__ import annotations

import enum
import json
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="what a config file may contain: JSON Schema and the reference.")


class Kind(str, enum.Enum):
    CONFIG = "config"
    OVERRIDES = "overrides"


@app.command("schema")
def schema_cmd(kind: Annotated[Kind, typer.Option("--kind", help="which file's schema")] = Kind.CONFIG) -> None:
    """Print the JSON Schema of a config (or overrides) file; editors validate YAML with it."""
    from vpp.config_reference import schema

    print(json.dumps(schema(kind.value), indent=1, ensure_ascii=False))


@app.command("reference")
def reference_cmd() -> None:
    """Print docs/config.md: every field with its type, default, description and an example."""
    from vpp.config_reference import reference

    print(reference(), end="")
