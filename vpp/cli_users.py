"""`vpp users add`: a console/portal user with a scrypt-hashed password in the users file beside the config."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="users of the operator console and customer portal.")


@app.command("add")
def add(
    config: Annotated[Path, typer.Option("--config", "-c", help="the config YAML (its contracts name the customers)")],
    name: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option("--role", help="operator or customer")] = "operator",
    customer: Annotated[str | None, typer.Option("--customer", help="customer users: the customer name its contracts give")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from the first line of stdin")] = False,
) -> None:
    """Add (or replace) a user; the password is asked twice unless --password-stdin."""
    from pydantic import ValidationError

    from vpp.config import load_config
    from vpp.daemon.config import DaemonModel
    from vpp.errors import InputError, from_validation_error
    from vpp.web.access import customers_of
    from vpp.web.auth import MAX_PASSWORD, hash_password
    from vpp.web.config import UserModel
    from vpp.web.users import add_user

    cfg = load_config(config)
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if not 8 <= len(password) <= MAX_PASSWORD:
        raise InputError("--password", "password", f"{len(password)} characters", f"8 to {MAX_PASSWORD} characters")
    known = customers_of(cfg.contracts)
    if customer is not None and customer not in known:
        raise InputError(str(config), "--customer", customer, f"a customer the contracts name, one of {sorted(known)}")
    try:
        user = UserModel(name=name, role=role, customer=customer, password=hash_password(password))
    except ValidationError as err:
        raise from_validation_error(err, "vpp users add") from None
    path = add_user((cfg.daemon or DaemonModel()).web, cfg.path, user)
    print(f"ok: {role} {name} in {path}")
