"""Browser-test helpers: Debian's chromium through Playwright (no browser download), users, servers.

Chromium runs headless with a fresh profile (Playwright's ``launch`` makes a new temporary user-data-dir
per browser) and without anything that reaches the network on its own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI

from vpp.daemon import api
from vpp.daemon.config import DaemonModel
from vpp.web.auth import hash_password
from vpp.web.config import UserModel
from vpp.web.users import add_user

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORDS = {"op": "operator-pass-1", "dg": "customer-pass-dg", "sz": "customer-pass-sz"}
SHOTS = Path(__file__).resolve().parents[1] / ".screenshots"


async def launch(playwright):
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def add_users(config: Path, web, customers: dict[str, str]) -> None:
    """op (operator) and one customer user per name → customer."""
    add_user(web, config, UserModel(name="op", role="operator", password=hash_password(PASSWORDS["op"])))
    for name, customer in customers.items():
        add_user(web, config, UserModel(name=name, role="customer", customer=customer, password=hash_password(PASSWORDS[name])))


async def login(browser, base: str, user: str):
    context = await browser.new_context(base_url=base, locale="en-US")
    page = await context.new_page()
    await page.goto("/ui/login?lang=en")
    await page.fill("input[name=user]", user)
    await page.fill("input[name=password]", PASSWORDS[user])
    await page.click("#login-submit")
    await page.wait_for_load_state("load")
    return context, page


async def shot(page, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def serve(app: FastAPI, port: int) -> tuple[api.Server, asyncio.Task]:
    server = api.server(app, "127.0.0.1", port)
    task = asyncio.create_task(server.serve(sockets=[api.listen("127.0.0.1", port, "test")]))
    while not server.started:
        await asyncio.sleep(0.02)
    return server, task


def web_settings(cfg) -> object:
    return (cfg.daemon or DaemonModel()).web
