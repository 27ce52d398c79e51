"""Integer money: currency minor units, exact conversion, and splits whose parts sum to the whole.

The ledger never stores floats. Rates from config are decimals in major units (8.5 CNY per kW) and
become exact ``Fraction``s of minor units here; an amount becomes an integer only once, rounded half
to even, and a split of an integer gives integers that always add back to it (largest remainder).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

# ISO 4217 currencies whose minor unit is not 1/100 (the rest have cents, fen, pence...).
_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip


def currency_exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit: 2 for CNY/USD/EUR, 0 for JPY, 3 for KWD."""
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount_major: Decimal | float | str, currency: str) -> Fraction:
    """An exact major-unit amount (or rate) in minor units, not yet rounded: Decimal('8.505') CNY → 850.5."""
    return Fraction(Decimal(str(amount_major))) * 10 ** currency_exponent(currency)


def round_minor(value: Fraction | int) -> int:
    """Round half to even (banker's rounding: no drift over many roundings)."""
    return round(Fraction(value))


def split_minor(amount: int, weights: Sequence[Fraction | int]) -> list[int]:
    """Split an integer amount in proportion to non-negative weights; the parts sum exactly to ``amount``.

    Largest-remainder (Hamilton) method: every part gets the floor of its exact quota, and the units
    left over go one each to the parts with the largest fractional remainders, ties to the earlier
    weight. A negative amount is split as the mirror image of the positive one, so a loss is shared
    exactly as a gain of the same size would be.
    """
    if amount < 0:
        return [-part for part in split_minor(-amount, weights)]
    total = sum(Fraction(w) for w in weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"split weights must be non-negative with a positive sum, got {list(weights)}")
    quotas = [Fraction(amount) * Fraction(w) / total for w in weights]
    parts = [q.numerator // q.denominator for q in quotas]
    left = amount - sum(parts)
    by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - parts[i]), i))
    for i in by_remainder[:left]:
        parts[i] += 1
    return parts


def format_minor(amount_minor: int, currency: str) -> str:
    """Minor units as an exact decimal string in major units: 123456 CNY → '1234.56'."""
    exp = currency_exponent(currency)
    return str(Decimal(int(amount_minor)).scaleb(-exp)) if exp else str(int(amount_minor))
