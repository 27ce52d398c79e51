"""A statement as CSV (one row per figure, amounts in exact minor and major units) and as PDF (fpdf2).

The PDF embeds a TrueType font with CJK glyphs (``daemon.web.pdf_font``, default Debian's
fonts-droid-fallback, Apache-2.0, which `.ci/run` installs, with DejaVu Sans for Latin text) so zh-CN
statements print; fpdf2 subsets it,
so a statement is tens of kB. Every number printed is the same formatted string the page shows.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from vpp.ledger.money import format_minor
from vpp.ledger.statement import Statement, stream_group
from vpp.web.config import DEFAULT_PDF_FONTS, LATIN_PDF_FONT
from vpp.web.i18n import Translator


def statement_lines(st: Statement, t: Translator) -> list[tuple[str, str, str, int | None]]:
    """(section, label, detail, amount_minor) rows shared by the CSV and the PDF."""
    rows: list[tuple[str, str, str, int | None]] = []
    if st.bill is not None:
        rows += [
            ("bill", t("st.bill_without"), "", st.bill.without_battery_minor),
            ("bill", t("st.bill_with"), "", st.bill.with_battery_minor),
            ("bill", t("st.bill_saved"), "", st.bill.without_battery_minor - st.bill.with_battery_minor),
        ]
    for stream, amount in st.streams:
        rows.append(("stream", t(f"group.{stream_group(stream)}"), stream, amount))
    for party, item, amount in st.split:
        rows.append(("split", party, t(f"item.{item}"), amount))
    rows.append(("total", t("st.total"), "", st.total_minor))
    return rows


def statement_csv(st: Statement, t: Translator) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["contract_id", "month", "section", "label", "detail", "amount_minor", f"amount_{st.currency}"])
    for section, label, detail, amount in statement_lines(st, t):
        w.writerow([st.contract_id, st.month, section, label, detail, amount, format_minor(amount, st.currency) if amount is not None else ""])
    for e in st.energy:
        w.writerow([st.contract_id, st.month, "energy", e.period, "charged_kwh", "", f"{e.charged_kwh:.3f}"])
        w.writerow([st.contract_id, st.month, "energy", e.period, "discharged_kwh", "", f"{e.discharged_kwh:.3f}"])
    w.writerow([st.contract_id, st.month, "energy", "cycles", "", "", f"{st.cycles:.3f}"])
    return out.getvalue()


def statement_pdf(st: Statement, t: Translator, plant: str, viewer: str | None, font: str | None = None) -> bytes:
    from fpdf import FPDF  # here, not at import: the daemon loads the web layer at start-up

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.add_font("cjk", fname=str(_font(font)))
    if Path(LATIN_PDF_FONT).is_file():  # Latin letters and digits from DejaVu, Chinese from the CJK font
        pdf.add_font("latin", fname=LATIN_PDF_FONT)
        pdf.set_fallback_fonts(["cjk"])
    text_font = "latin" if Path(LATIN_PDF_FONT).is_file() else "cjk"
    pdf.set_font(text_font, size=16)
    pdf.cell(0, 10, t("st.title"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(text_font, size=10)
    for line in (f"{t('st.contract')}: {st.contract_id} ({t('model.' + st.model)})", f"{t('st.month')}: {t.month(st.month)}", f"{t('st.plant')}: {plant}", f"{t('st.intervals')}: {st.intervals}"):
        pdf.cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    if viewer:
        pdf.cell(0, 6, f"{t('st.customer')}: {viewer} — {t('st.receives')} {t.money(st.received_minor(viewer))}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    section = None
    for sec, label, detail, amount in statement_lines(st, t):
        if sec != section:
            section = sec
            pdf.set_font(text_font, size=12)
            pdf.cell(0, 8, t(f"st.section.{sec}"), new_x="LMARGIN", new_y="NEXT")
            pdf.set_font(text_font, size=10)
        pdf.cell(70, 6, label)
        pdf.cell(70, 6, detail)
        pdf.cell(0, 6, t.money(amount) if amount is not None else "", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(text_font, size=12)
    pdf.cell(0, 8, t("st.section.energy"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(text_font, size=10)
    for e in st.energy:
        pdf.cell(70, 6, e.period)
        pdf.cell(70, 6, f"{t('st.charged')} {t.num(e.charged_kwh)} kWh")
        pdf.cell(0, 6, f"{t('st.discharged')} {t.num(e.discharged_kwh)} kWh", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 6, f"{t('st.cycles')}: {t.num(st.cycles, 2)}", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _font(configured: str | None) -> Path:
    for candidate in ([configured] if configured else []) + list(DEFAULT_PDF_FONTS):
        if Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(f"no CJK TrueType font for PDF statements: set daemon.web.pdf_font or apt-get install fonts-droid-fallback (looked for {configured or DEFAULT_PDF_FONTS[0]})")
