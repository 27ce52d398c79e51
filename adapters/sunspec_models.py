"""SunSpec model layouts and point codecs, taken from the SunSpec Alliance's own definitions.

``pysunspec2`` ships the model JSON (``sunspec2/models/json/model_<id>.json``)
and the per-type codecs and "not implemented" sentinels; this module turns a
definition into register offsets once (cached) and reads or writes single
points. Nothing here hand-types a register address: offsets come from the
definitions, so a model revision is a pysunspec2 upgrade.
Used by the SunSpec adapter (decode) and the SunSpec simulator (encode).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import sunspec2.device as ss_device
import sunspec2.mb as ss_mb
import sunspec2.mdef as ss_mdef

SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
BASE_ADDRESSES = (40000, 0, 50000)  # where discovery looks for the marker, in this order
END_MODEL_ID = 0xFFFF
HEADER_REGISTERS = 2  # model id, model length
SCALE_FACTOR_RANGE = range(-10, 11)  # a sunssf outside this is garbage, not a scale


@dataclass(frozen=True, slots=True)
class PointDef:
    name: str
    offset: int  # registers from the model's ID register
    size: int  # registers
    type: str  # SunSpec type name (int16, uint32, sunssf, string, ...)
    sf: str | int | None  # name of the scale-factor point in the same model, or a fixed exponent
    writable: bool
    symbols: Mapping[int, str]  # enum value, or bit number of a bitfield -> symbol name


@dataclass(frozen=True, slots=True)
class ModelDef:
    model_id: int
    name: str
    length: int  # registers after the 2-register header
    points: Mapping[str, PointDef]  # the model's top-level points

    def span(self, *names: str) -> tuple[int, int]:
        """(first offset, end offset) covering ``names`` and their scale factors."""
        points = [self.points[n] for n in names]
        points += [self.points[p.sf] for p in points if isinstance(p.sf, str)]
        return min(p.offset for p in points), max(p.offset + p.size for p in points)


@functools.cache
def model_def(model_id: int) -> ModelDef:
    """The layout of a SunSpec model. Raises ``KeyError`` for a model pysunspec2 does not define."""
    try:
        raw = ss_device.get_model_def(model_id)
    except ss_mdef.ModelDefinitionError:
        raise KeyError(f"SunSpec model {model_id} is not defined") from None
    group = raw[ss_mdef.GROUP]
    points: dict[str, PointDef] = {}
    length = _add_points(group, "", 0, points)
    return ModelDef(model_id, group[ss_mdef.NAME], length - HEADER_REGISTERS, points)


def _add_points(group: Mapping, prefix: str, offset: int, points: dict[str, PointDef]) -> int:
    """Lay out a group's points, then its nested groups (as ``Group.Point``); return the end offset.

    A repeating group is laid out once: the battery models used here have none.
    """
    for p in group[ss_mdef.POINTS]:
        name = prefix + p[ss_mdef.NAME]
        size = int(p.get(ss_mdef.SIZE, 1))
        sf = p.get(ss_mdef.SF)
        points[name] = PointDef(
            name=name,
            offset=offset,
            size=size,
            type=p[ss_mdef.TYPE],
            sf=_scale_factor(sf),
            writable=p.get(ss_mdef.ACCESS, ss_mdef.ACCESS_R) == ss_mdef.ACCESS_RW,
            symbols={int(s[ss_mdef.VALUE]): s[ss_mdef.NAME] for s in p.get(ss_mdef.SYMBOLS, [])},
        )
        offset += size
    for nested in group.get(ss_mdef.GROUPS, []):
        offset = _add_points(nested, f"{prefix}{nested[ss_mdef.NAME]}.", offset, points)
    return offset


def _scale_factor(sf: str | int | None) -> str | int | None:
    """A fixed exponent, or the name of the scale-factor point (top level in every model used here)."""
    if isinstance(sf, str) and sf.lstrip("-").isdigit():
        return int(sf)
    return sf


# ---------------------------------------------------------------- decoding


def raw_value(point: PointDef, registers: Sequence[int]) -> int | str | None:
    """The point's raw value from its ``size`` registers, or ``None`` for the "not implemented" sentinel."""
    info = ss_mb.point_type_info[point.type]
    data = struct.pack(f">{point.size}H", *registers[: point.size])
    try:
        value = info.data_to(data)
    except UnicodeDecodeError:  # a string point holding garbage
        return None
    if value is None or not info.is_impl(value):
        return None
    if point.type == ss_mdef.TYPE_SUNSSF and value not in SCALE_FACTOR_RANGE:
        return None
    return value


class ModelView:
    """Typed access to one model's points in registers read from a device.

    ``read(offset, count)`` returns registers relative to the model's ID register.
    """

    def __init__(self, model: ModelDef, read: Callable[[int, int], Sequence[int]]) -> None:
        self.model = model
        self._read = read

    def raw(self, name: str) -> int | str | None:
        point = self.model.points[name]
        return raw_value(point, self._read(point.offset, point.size))

    def value(self, name: str) -> float | None:
        """Raw × 10^sf; ``None`` when the point or its scale factor is not implemented."""
        point = self.model.points[name]
        raw = self.raw(name)
        if not isinstance(raw, int):
            return None
        if point.sf is None:
            return float(raw)
        sf = point.sf if isinstance(point.sf, int) else self.raw(point.sf)
        if not isinstance(sf, int):
            return None
        value = raw * 10.0**sf
        return value if math.isfinite(value) else None

    def enum(self, name: str) -> int | None:
        raw = self.raw(name)
        return raw if isinstance(raw, int) else None

    def flags(self, name: str) -> tuple[str, ...]:
        """Symbol names of the set bits of a bitfield (``BIT<n>`` for bits the model does not name)."""
        raw = self.enum(name)
        if raw is None:
            return ()
        symbols = self.model.points[name].symbols
        return tuple(symbols.get(bit, f"BIT{bit}") for bit in range(raw.bit_length()) if raw >> bit & 1)

    def text(self, name: str) -> str | None:
        raw = self.raw(name)
        return raw if isinstance(raw, str) else None


# ---------------------------------------------------------------- encoding


def encode(point: PointDef, raw: int | str | None) -> list[int]:
    """Registers for a raw value (``None`` = the "not implemented" sentinel)."""
    info = ss_mb.point_type_info[point.type]
    if raw is None:
        data = ss_mb.create_unimpl_value(point.type, point.size * 2)
    elif point.type == ss_mdef.TYPE_STRING:
        data = str(raw).encode()[: point.size * 2].ljust(point.size * 2, b"\0")
    else:
        data = info.to_data(raw, point.size * 2)
    return list(struct.unpack(f">{point.size}H", data))


def to_raw(value: float, sf: int) -> int:
    """Engineering value -> raw integer at scale factor ``sf``."""
    return round(value / 10.0**sf)

