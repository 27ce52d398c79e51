"""Settling retail sites on their bill: from the grid meter's counters where there is one, else the model.

The ``tou_savings`` and ``demand_charge_savings`` of a retail site are the
change the batteries made to the site's bill (``vpp.site_billing``). A site with
a grid meter is billed on its counters: the interval's import/export as counted,
the bill without the battery with the batteries' metered energy added back. A
site without one is billed on its configured load − PV less the batteries'
metered energy (``modelled_energy``): the same bill, on a model. Either way the
demand-charge saving is booked as the month's saving changes — charge × (the
month's peak without the battery − with it), over every interval settled so far —
never as one interval's own peak reduction, which summed over a month's intervals
would credit the charge once per interval. The site's rows go to the ledger's
``site_energy`` table in the same transaction as the units' amounts, and the
saving is split over the site's units (largest remainder, by the energy each
moved; by capacity when none did), so unit settlement stays per unit and sums
exactly to the site's. Everything is read from what is stored (meter buckets,
the month's earlier ``site_energy`` rows), so a re-settlement after a restart
computes the same rows and the ledger keeps the first. Runs on the database thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pandas as pd

from vpp.config import VppConfig
from vpp.daemon.meter_store import readings
from vpp.fleet import Site
from vpp.ledger.money import split_minor
from vpp.ledger.store import site_energy_rows
from vpp.meter import connection_rating_kw
from vpp.meter_config import MeterModel
from vpp.site_billing import SiteBill, demand_saving_minor, interval_energy, modelled_energy, site_bill, window_peaks_kw

log = logging.getLogger(__name__)

BILL_STREAMS = ("tou_savings", "demand_charge_savings")


@dataclass(frozen=True)
class RetailSite:
    site: Site
    position: int  # in the config's site order (the problem's site rows)
    meter: MeterModel | None  # None: billed on the configured load/PV
    units: np.ndarray  # positions of its units in the config's unit order
    rating_kw: float


class RetailSites:
    def __init__(self, cfg: VppConfig, bucket: pd.Timedelta, speed: float) -> None:
        self.cfg, self.bucket, self.speed = cfg, bucket, speed  # speed: market seconds per wall second
        unit_site = np.array([u.site_id for u in cfg.fleet.units], dtype=object)
        self.sites: dict[str, RetailSite] = {}
        for position, site in enumerate(cfg.fleet.sites):
            if site.market != "retail" or site.tariff is None:
                continue
            meter = cfg.meters.get(site.id)
            units = np.flatnonzero(unit_site == site.id)
            battery_kw = float(sum(max(cfg.fleet.units[i].max_charge_kw, cfg.fleet.units[i].max_discharge_kw) for i in units))
            rating_kw = connection_rating_kw(meter.rating_kw, site.import_limit_kw, site.export_limit_kw, battery_kw) if meter is not None else 0.0
            self.sites[site.id] = RetailSite(site, position, meter, units, rating_kw)

    def settle(self, engine, start: pd.Timestamp, end: pd.Timestamp, unit_kwh: np.ndarray, net_load_kw: np.ndarray, frame: pd.DataFrame, exponent: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """``frame`` with the retail sites' savings replaced by those on their bills, and their ``site_energy``
        rows. ``unit_kwh`` (U,): each unit's net discharge in the interval (what ``metered_energy`` stores);
        ``net_load_kw`` (S,): each site's configured load − PV in it (what an unmetered site is billed on)."""
        if not self.sites:
            return frame, None
        ids = list(self.sites)
        metered = [sid for sid, rs in self.sites.items() if rs.meter is not None]
        buckets = readings(engine, start - self.bucket, end, metered) if metered else None
        month_start = _month_start(start, self.cfg.timezone)
        earlier = site_energy_rows(engine, month_start, start, ids)
        unit_wh = np.rint(unit_kwh * 1000.0).astype(np.int64)
        site_rows, unit_rows = [], []
        for sid, ms in self.sites.items():
            if ms.meter is None:
                energy = modelled_energy(float(net_load_kw[ms.position]), int(unit_wh[ms.units].sum()), end - start)
            else:
                energy = interval_energy(buckets[buckets["site_id"] == sid], start, end, self.bucket, ms.meter.poll_s * self.speed, ms.rating_kw)
            tariff = ms.site.tariff
            period = tariff.periods[int(tariff.period_of(pd.DatetimeIndex([start]))[0])]
            bill = site_bill(energy, int(unit_wh[ms.units].sum()), period.price_per_kwh, tariff.feed_in_price_per_kwh, exponent)
            demand = self._demand_booked(ms, earlier[earlier["site_id"] == sid], month_start, start, bill, exponent)
            if energy.flag:
                log.warning("site %s interval=%s billed on the meter's integrated power, flagged: %s", sid, start.isoformat(), energy.flag)
            site_rows.append({"site_id": sid, "interval_start": start, "import_wh": bill.import_wh, "export_wh": bill.export_wh, "battery_wh": bill.battery_wh, "baseline_import_wh": bill.baseline_import_wh, "baseline_export_wh": bill.baseline_export_wh, "bill_minor": bill.bill_minor, "baseline_bill_minor": bill.baseline_bill_minor, "source": energy.source, "flag": energy.flag})
            weights = np.abs(unit_wh[ms.units])
            weights = [int(w) for w in weights] if weights.sum() > 0 else [Fraction(Decimal(str(self.cfg.fleet.units[i].energy_kwh))) for i in ms.units]
            for stream, amount in (("tou_savings", bill.tou_savings_minor), ("demand_charge_savings", demand)):
                if amount:
                    for i, part in zip(ms.units, split_minor(amount, weights)):
                        if part:
                            unit_rows.append({"interval_start": start, "unit_id": self.cfg.fleet.units[i].id, "site_id": sid, "stream": stream, "amount": part / 10**exponent, "amount_minor": part})
        keep = frame[~(frame["site_id"].isin(ids) & frame["stream"].isin(BILL_STREAMS))]
        added = pd.DataFrame(unit_rows, columns=frame.columns).astype({"amount_minor": "int64"})
        out = pd.concat([keep, added], ignore_index=True) if len(added) else keep.reset_index(drop=True)
        return out.sort_values(["interval_start", "unit_id", "stream"], kind="stable").reset_index(drop=True), pd.DataFrame(site_rows)

    def _demand_booked(self, ms: RetailSite, earlier: pd.DataFrame, month_start: pd.Timestamp, start: pd.Timestamp, bill: SiteBill, exponent: int) -> int:
        """The change of the month's demand-charge saving this interval makes (0 unless it closes a window)."""
        charge = ms.site.tariff.demand_charge_per_kw_month
        if charge <= 0:
            return 0
        interval = self.cfg.interval
        starts = pd.date_range(month_start, start, freq=interval, inclusive="left")
        stored = earlier.set_index("interval_start")
        imp = stored["import_wh"].reindex(starts, fill_value=0).astype(int).tolist()  # an interval never settled counts 0 (never high)
        base = stored["baseline_import_wh"].reindex(starts, fill_value=0).astype(int).tolist()
        window = pd.Timedelta(minutes=ms.meter.demand_window_min) if ms.meter is not None else interval  # unmetered: the plan's resolution
        before = demand_saving_minor(charge, ms.site.demand_peak_so_far_kw, window_peaks_kw(imp, interval, window), window_peaks_kw(base, interval, window), exponent)
        after = demand_saving_minor(charge, ms.site.demand_peak_so_far_kw, window_peaks_kw([*imp, bill.import_wh], interval, window), window_peaks_kw([*base, bill.baseline_import_wh], interval, window), exponent)
        return after - before


def _month_start(at: pd.Timestamp, timezone: str) -> pd.Timestamp:
    """The local billing month's first instant (an interval belongs to the month it starts in), UTC."""
    local = at.tz_convert(timezone)
    return local.normalize().replace(day=1).tz_convert("UTC")
