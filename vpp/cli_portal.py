"""`vpp portal`: the customer portal and statements without a daemon (a central server over the ledger).

The same pages as on the gateway (``vpp.web``); console pages that need live data say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def portal_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="the config YAML (contracts, users, currency, time zone)")],
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 8081,
    db: Annotated[str | None, typer.Option("--db", help="ledger database URL or SQLite path; default: the daemon's")] = None,
) -> None:
    """Serve the statements of the ledger in a browser (log in with a user of `vpp users add`)."""
    import asyncio

    from fastapi import FastAPI

    from vpp.cli_ledger import _open
    from vpp.daemon import api
    from vpp.web.pages import mount

    cfg, engine = _open(config, db)
    app = FastAPI(title="vpp portal", docs_url=None, redoc_url=None, openapi_url=None)
    mount(app, cfg=lambda: cfg, engine=engine)
    sock = api.listen(host, port, str(config))
    print(f"ok: portal on http://{host}:{port}/ui/")
    asyncio.run(api.server(app, host, port).serve(sockets=[sock]))
