#!/usr/bin/env python3
"""Write a few sample documents for the demo: scans, a text-layer PDF, an image, and bad input.

    python scripts/make_samples.py DIR

Everything is generated here (nothing is committed): scanned pages are rendered
text, rasterised to grayscale, and put back into a PDF as images, as a scanner would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pymupdf

LINES = [
    "Patient intake form - Riverside Clinic",
    "Name: Jane Example    Date of birth: 1984-03-12",
    "Reason for visit: follow-up after knee surgery",
    "Medication: ibuprofen 400 mg twice daily",
    "Allergies: none known",
]


def text_page(doc: pymupdf.Document, lines: list[str]) -> pymupdf.Page:
    page = doc.new_page(width=595, height=842)
    y = 90
    for line in lines:
        page.insert_text((60, y), line, fontsize=13, fontname="helv")
        y += 28
    return page


def scan_of(lines_per_page: list[list[str]], dpi: int = 200) -> pymupdf.Document:
    source = pymupdf.open()
    for lines in lines_per_page:
        text_page(source, lines)
    scan = pymupdf.open()
    for page in source:
        pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        scan.new_page(width=page.rect.width, height=page.rect.height).insert_image(
            page.rect, stream=pix.tobytes("jpeg", jpg_quality=80))
    return scan


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "var/samples")
    out.mkdir(parents=True, exist_ok=True)
    scan_of([LINES, [f"Page two, line {i}: blood pressure 120/80" for i in range(1, 6)]]).save(out / "scanned-intake.pdf")
    digital = pymupdf.open()
    text_page(digital, [*LINES, "This PDF has a text layer: no OCR needed for it."] * 2)
    digital.save(out / "digital-letter.pdf")
    scan_of([LINES[:3]])[0].get_pixmap(dpi=150, colorspace=pymupdf.csGRAY).save(out / "referral.png")
    (out / "damaged.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF garbage")
    for path in sorted(out.iterdir()):
        print(path)


if __name__ == "__main__":
    main()
