"""en and zh-CN: message catalogs (``i18n/<lang>.json``) and number, money and time formats.

A missing key renders as ``⟦key⟧``, never as the bare key, so a page with a missing string is visible
at a glance and the browser tests look for the marker; a test also checks that both catalogs hold
exactly the keys the templates and routes use. Money is integer minor units, formatted exactly
(``Decimal``, never a float), with the currency of the config; times are shown in the config's time zone.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from pathlib import Path

import pandas as pd

from vpp.ledger.money import currency_exponent

CATALOGS = Path(__file__).with_name("i18n")
LANGUAGES = ("en", "zh-CN")
MISSING = "⟦{}⟧"
_SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


@cache
def catalog(lang: str) -> dict[str, str]:
    return json.loads((CATALOGS / f"{lang}.json").read_text(encoding="utf-8"))


class Translator:
    def __init__(self, lang: str, currency: str, timezone: str) -> None:
        self.lang = lang if lang in LANGUAGES else "en"
        self.currency, self.timezone = currency, timezone
        self._messages = catalog(self.lang)

    def __call__(self, key: str, **values: object) -> str:
        text = self._messages.get(key)
        if text is None:
            return MISSING.format(key)
        return text.format(**values) if values else text

    def maybe(self, key: str, fallback: str) -> str:
        """For keys made from data that other parts may extend (alarm kinds): the raw value if uncatalogued."""
        return self._messages.get(key, fallback)

    def money(self, amount_minor: int, *, symbol: bool = True) -> str:
        """Exact: 123456 CNY → '¥1,234.56' (zh-CN) or 'CNY 1,234.56' (en); negatives with a minus sign."""
        exp = currency_exponent(self.currency)
        value = Decimal(int(amount_minor)).scaleb(-exp)
        body = f"{abs(value):,.{exp}f}"
        sign = "-" if value < 0 else ""
        if not symbol:
            return f"{sign}{body}"
        if self.lang == "zh-CN" and self.currency in _SYMBOLS:
            return f"{sign}{_SYMBOLS[self.currency]}{body}"
        return f"{sign}{self.currency} {body}"

    def num(self, value: float | None, digits: int = 1) -> str:
        if value is None or value != value:  # None or NaN
            return "–"
        return f"{value:,.{digits}f}"

    def pct(self, value: float | None, digits: int = 0) -> str:
        return "–" if value is None or value != value else f"{100 * value:.{digits}f}%"

    def time(self, ts: object, fmt: str = "%Y-%m-%d %H:%M") -> str:
        if ts is None:
            return "–"
        t = pd.Timestamp(ts)
        if t.tzinfo is None:
            t = t.tz_localize("UTC")
        return t.tz_convert(self.timezone).strftime(fmt)

    def month(self, month: str) -> str:
        year, mon = month.split("-")
        return f"{year}年{int(mon)}月" if self.lang == "zh-CN" else pd.Timestamp(f"{month}-01").strftime("%B %Y")
