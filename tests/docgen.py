"""Synthetic documents with known text, made on the fly for the tests and the benchmark.

Nothing here is committed as a file: every scan, TIFF, PNG, JPEG and bad input is
generated from a seed, so the repository stays small and the ground truth is exact.

A "scan" is made the way paper gets scanned: text laid out by PyMuPDF with one of its
built-in fonts (helv, tiro, cour), rasterised in grayscale, turned by a fraction of a
degree, blurred, given sensor noise and stored as a JPEG. `scanned_pdf` puts such JPEGs
inside a PDF (one image per page, no text layer), which is what a copier produces.

`SAMPLES` names the kinds of input the worker really gets (low-resolution copier scans
at heavy JPEG compression, CCITT G4 faxes at fine and normal resolution, phone photos
of a page, two-column letters, a medication table), each made by `make_sample`; the
tests and `scripts/bench_ocr.py` measure CER per kind on them.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pymupdf

A4 = (595.0, 842.0)  # points
A6 = (298.0, 420.0)

# Plain English vocabulary plus the numbers, dates and units that clinical letters carry.
WORDS = (
    "the of and to in is was for that with on as by at from this patient report date "
    "result normal follow review clinic history blood pressure heart rate exam letter "
    "referral treatment plan daily dose tablet morning evening weeks months year left "
    "right chest pain mild severe stable improved noted advised return after before "
    "without with further imaging scan test value range within above below level "
    "doctor nurse ward hospital discharge summary medication allergy known none signed "
    "please contact office telephone address street north south village county service "
    "general practice reference number account invoice total amount paid balance due"
).split()


# What clinical letters carry and a general-purpose model misreads: drug names, units,
# lab names, doses and dates (dd/mm/yyyy, as in UK letters).
DRUGS = ("Metformin Amlodipine Atorvastatin Ramipril Levothyroxine Omeprazole Bisoprolol "
         "Lansoprazole Simvastatin Gliclazide Furosemide Warfarin Apixaban Salbutamol "
         "Sertraline Paracetamol Ibuprofen Amoxicillin Prednisolone Insulin").split()
UNITS = ("mg", "mcg", "ml", "mmol/L", "mmol/mol", "units", "g/L", "mL/min")
LABS = ("HbA1c", "eGFR", "LDL", "HDL", "TSH", "CRP", "ALT", "INR", "FBC", "U&E", "BNP", "Hb")
FREQUENCIES = ("once daily", "twice daily", "three times daily", "at night", "as required", "weekly")


def clinical_phrase(rng: random.Random) -> str:
    """A dose line or a lab result: "Metformin 500 mg twice daily, started 21/05/2022", "HbA1c 48 mmol/mol"."""
    date = f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2015, 2025)}"
    if rng.random() < 0.55:
        dose = rng.choice(["500", "250", "20", "10", "5", "2.5", "40", "100", "75", "1"])
        unit = rng.choice(["mg", "mg", "mcg", "ml", "units"])
        phrase = f"{rng.choice(DRUGS)} {dose} {unit} {rng.choice(FREQUENCIES)}"
        return phrase + (f", started {date}" if rng.random() < 0.5 else "")
    lab = rng.choice(LABS)
    value = rng.choice([f"{rng.randint(20, 140)}", f"{rng.randint(1, 12)}.{rng.randint(0, 9)}"])
    return f"{lab} {value} {rng.choice(UNITS[3:])} on {date}"


def _token(rng: random.Random, clinical: float = 0.0) -> str:
    if clinical and rng.random() < clinical:
        return clinical_phrase(rng)
    roll = rng.random()
    if roll < 0.06:
        return f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2025)}"
    if roll < 0.12:
        return str(rng.randint(2, 9999))
    if roll < 0.15:
        return f"{rng.randint(1, 250)}{rng.choice(['mg', 'ml', 'kg', 'mm'])}"
    word = rng.choice(WORDS)
    if rng.random() < 0.12:
        word = word.capitalize()
    return word


def text_lines(rng: random.Random, count: int, width_chars: int = 64, clinical: float = 0.0) -> list[str]:
    """`count` lines of word-like text, each at most `width_chars` long, some ending in punctuation.

    `clinical`: the share of tokens that are whole clinical phrases (doses, lab results)."""
    lines = []
    for _ in range(count):
        words: list[str] = []
        length = 0
        target = rng.randint(width_chars * 2 // 3, width_chars)
        while True:
            token = _token(rng, clinical)
            if length + len(token) + (1 if words else 0) > target:
                break
            words.append(token)
            length += len(token) + (1 if len(words) > 1 else 0)
        line = " ".join(words) or _token(rng)
        if rng.random() < 0.3:
            line += rng.choice([".", ",", ":", ";"])
        lines.append(line[0].upper() + line[1:])
    return lines


@dataclass
class Page:
    """One generated page: the image (grayscale uint8) and the lines it shows, top to bottom."""

    image: np.ndarray
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class ScanStyle:
    dpi: int = 300
    angle: float = 0.6        # degrees; real feeders skew by about this much
    blur: float = 0.8         # Gaussian sigma in pixels at `dpi`
    noise: float = 6.0        # standard deviation of additive noise, in grey levels
    jpeg_quality: int = 75
    font: str = "helv"
    fontsize: float = 11.0
    page_size: tuple[float, float] = A4
    margin: float = 56.0
    leading: float = 1.55     # line spacing as a multiple of the font size
    clinical: float = 0.0     # share of tokens that are clinical phrases (doses, lab results, dates)
    columns: int = 1          # 2: a two-column letter (the truth is read column by column)


COLUMN_GAP = 28.0  # points between the columns of a two-column page


def _typeset(lines: list[str], style: ScanStyle) -> pymupdf.Document:
    doc = pymupdf.open()
    width, height = style.page_size
    page = doc.new_page(width=width, height=height)
    per_column = -(-len(lines) // style.columns)
    column_width = (width - 2 * style.margin - COLUMN_GAP * (style.columns - 1)) / style.columns
    for index, line in enumerate(lines):
        column, row = divmod(index, per_column)
        x = style.margin + column * (column_width + COLUMN_GAP)
        y = style.margin + style.fontsize + row * style.fontsize * style.leading
        page.insert_text((x, y), line, fontname=style.font, fontsize=style.fontsize)
    return doc


def lines_that_fit(style: ScanStyle) -> tuple[int, int]:
    """(lines, characters per line) that fit the page at the style's font and spacing."""
    width, height = style.page_size
    usable_h = height - 2 * style.margin - style.fontsize
    rows = int(usable_h // (style.fontsize * style.leading)) + 1
    # helv's average glyph is ~0.5 em wide on this vocabulary; cour is exactly 0.6 em.
    em = 0.6 if style.font == "cour" else 0.52
    column_width = (width - 2 * style.margin - COLUMN_GAP * (style.columns - 1)) / style.columns
    cols = int(column_width / (style.fontsize * em))
    return rows * style.columns, cols


def render_page(lines: list[str], style: ScanStyle) -> np.ndarray:
    """The clean grayscale raster of `lines` typeset on one page."""
    doc = _typeset(lines, style)
    pix = doc[0].get_pixmap(dpi=style.dpi, colorspace=pymupdf.csGRAY)
    image = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width).copy()
    doc.close()
    return image


def degrade(image: np.ndarray, style: ScanStyle, rng: random.Random) -> np.ndarray:
    """What a scanner does to a clean page: skew, blur, noise (JPEG comes when it is stored)."""
    h, w = image.shape
    if style.angle:
        angle = style.angle * (1 if rng.random() < 0.5 else -1)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=255)
    if style.blur:
        image = cv2.GaussianBlur(image, (0, 0), style.blur)
    if style.noise:
        noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, style.noise, image.shape)
        image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return image


def scanned_page(seed: int, style: ScanStyle | None = None, lines: int | None = None) -> Page:
    """A degraded raster of a page of generated text, and that text."""
    style = style or ScanStyle()
    rng = random.Random(seed)
    rows, cols = lines_that_fit(style)
    text = text_lines(rng, min(rows, lines) if lines else rows, cols, style.clinical)
    return Page(degrade(render_page(text, style), style, rng), text)


def encode_jpeg(image: np.ndarray, quality: int = 75) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def scanned_pdf(path: Path, seeds: list[int] | range, style: ScanStyle | None = None,
                lines: int | None = None) -> list[Page]:
    """A PDF of scanned pages (one JPEG per page, no text layer). Returns the pages' text.

    The images are written one at a time, so a long document costs the memory of one page.
    """
    style = style or ScanStyle()
    doc = pymupdf.open()
    truth = []
    width, height = style.page_size
    for seed in seeds:
        page = scanned_page(seed, style, lines)
        out = doc.new_page(width=width, height=height)
        out.insert_image(out.rect, stream=encode_jpeg(page.image, style.jpeg_quality))
        truth.append(Page(np.empty((0, 0), np.uint8), page.lines))  # keep the text, not the pixels
    doc.save(path, garbage=0, deflate=False)
    doc.close()
    return truth


def text_pdf(path: Path, pages: list[list[str]], style: ScanStyle | None = None) -> None:
    """A born-digital PDF: every page has a real text layer."""
    style = style or ScanStyle()
    doc = pymupdf.open()
    for lines in pages:
        one = _typeset(lines, style)
        doc.insert_pdf(one)
        one.close()
    doc.save(path)
    doc.close()


def mixed_pdf(path: Path, seed: int, style: ScanStyle | None = None) -> tuple[list[str], list[str]]:
    """Page 1 with a text layer, page 2 a scan. Returns (page 1 lines, page 2 lines)."""
    style = style or ScanStyle()
    rng = random.Random(seed)
    rows, cols = lines_that_fit(style)
    first = text_lines(rng, 12, cols)
    scan = scanned_page(seed + 1, style, lines=12)
    doc = _typeset(first, style)
    width, height = style.page_size
    out = doc.new_page(width=width, height=height)
    out.insert_image(out.rect, stream=encode_jpeg(scan.image, style.jpeg_quality))
    doc.save(path)
    doc.close()
    return first, scan.lines


def multipage_tiff(path: Path, pages: list[Page], dpi: int = 300, compression: str | None = "tiff_lzw") -> None:
    from PIL import Image

    frames = [Image.fromarray(p.image, mode="L") for p in pages]
    kwargs = {"compression": compression} if compression else {}
    frames[0].save(path, format="TIFF", save_all=True, append_images=frames[1:], dpi=(dpi, dpi), **kwargs)


# --- the inputs people really send -----------------------------------------------

def table_page(seed: int, style: ScanStyle, rows: int = 12) -> Page:
    """A ruled medication table (drug, dose, frequency, started), scanned; the truth is row by row."""
    rng = random.Random(seed)
    header = ["Medication", "Dose", "Frequency", "Started"]
    body = [[rng.choice(DRUGS), f"{rng.choice(['500', '20', '10', '2.5', '75', '100'])} "
             f"{rng.choice(['mg', 'mcg', 'ml'])}", rng.choice(FREQUENCIES),
             f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2015, 2025)}"] for _ in range(rows)]
    doc = pymupdf.open()
    width, height = style.page_size
    page = doc.new_page(width=width, height=height)
    widths = [150.0, 80.0, 140.0, 90.0]
    row_h = style.fontsize * 2.0
    x0, y0 = style.margin, style.margin + 20
    shape = page.new_shape()
    for r, cells in enumerate([header, *body]):
        y = y0 + r * row_h
        x = x0
        for w, cell in zip(widths, cells):
            page.insert_text((x + 4, y + row_h * 0.68), cell, fontname="hebo" if r == 0 else style.font,
                             fontsize=style.fontsize)
            x += w
    for r in range(len(body) + 2):
        shape.draw_line((x0, y0 + r * row_h), (x0 + sum(widths), y0 + r * row_h))
    x = x0
    for w in [0.0, *widths]:
        x += w
        shape.draw_line((x, y0), (x, y0 + (len(body) + 1) * row_h))
    shape.finish(color=(0, 0, 0), width=0.8)
    shape.commit()
    pix = page.get_pixmap(dpi=style.dpi, colorspace=pymupdf.csGRAY)
    image = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width).copy()
    doc.close()
    lines = [" ".join(cells) for cells in [header, *body]]
    return Page(degrade(image, style, rng), lines)


def photo_of_page(page: Page, seed: int, long_side: int = 2400) -> np.ndarray:
    """A phone photo of a printed page: the page smaller than the frame on a darker desk, seen
    at a slight angle (perspective), lit unevenly, a little out of focus."""
    rng = random.Random(seed)
    h, w = page.image.shape
    scale = long_side / max(h, w)
    out_h, out_w = int(h * scale), int(w * scale)
    inset = 0.07
    quad = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = [(rng.uniform(-0.025, 0.025), rng.uniform(-0.02, 0.02)) for _ in range(4)]
    corners = [(inset, inset), (1 - inset, inset), (1 - inset, 1 - inset), (inset, 1 - inset)]
    target = np.float32([[(cx + dx) * out_w, (cy + dy) * out_h] for (cx, cy), (dx, dy) in zip(corners, jitter)])
    matrix = cv2.getPerspectiveTransform(quad, target)
    image = cv2.warpPerspective(page.image, matrix, (out_w, out_h), flags=cv2.INTER_AREA, borderValue=90)
    # Light falls off across the frame: a gradient from one corner, 25-40 % darker at the far side.
    yy, xx = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    fall = rng.uniform(0.25, 0.4)
    light = 1.0 - fall * (xx / out_w * 0.6 + yy / out_h * 0.4)
    image = cv2.GaussianBlur(image.astype(np.float32) * light, (0, 0), 1.1)
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 5.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def fax_page(page: Page, vertical_dpi: int, dpi: int = 200) -> np.ndarray:
    """A fax: black and white only, at `vertical_dpi` lines per inch (100 for normal, 200 for fine)."""
    image = page.image
    if vertical_dpi != dpi:
        image = cv2.resize(image, (image.shape[1], round(image.shape[0] * vertical_dpi / dpi)),
                           interpolation=cv2.INTER_AREA)
    return np.where(image < 150, 0, 255).astype(np.uint8)


def fax_tiff(path: Path, images: list[np.ndarray], dpi: tuple[int, int]) -> None:
    """A multi-page TIFF in CCITT Group 4 at (horizontal, vertical) dpi, as fax servers store it."""
    from PIL import Image

    frames = [Image.fromarray(image, mode="L").convert("1") for image in images]
    frames[0].save(path, format="TIFF", save_all=True, append_images=frames[1:], dpi=dpi, compression="group4")


@dataclass
class Sample:
    """A generated document of one kind, with its text per page."""

    kind: str
    path: Path
    truth: list[str]
    columns: int = 1


def _scan_pdf_sample(kind: str, path: Path, seeds: list[int], style: ScanStyle, lines: int | None) -> Sample:
    pages = scanned_pdf(path, seeds, style, lines)
    return Sample(kind, path, [p.text for p in pages], style.columns)


def _low_res(dpi: int, quality: int) -> ScanStyle:
    # A copier set to save space: low resolution, heavy JPEG, one column of clinical text.
    return ScanStyle(dpi=dpi, jpeg_quality=quality, angle=0.7, blur=0.5 * dpi / 150, noise=6.0, clinical=0.25)


def make_sample(kind: str, directory: Path, seed: int = 1, pages: int = 1, lines: int | None = None) -> Sample:
    """One document of `kind` (a key of SAMPLES) with `pages` pages in `directory`."""
    seeds = [seed * 100 + i for i in range(pages)]
    directory.mkdir(parents=True, exist_ok=True)
    if kind.startswith("scan"):
        dpi, quality = SAMPLES[kind]
        ext = "pdf"
        return _scan_pdf_sample(kind, directory / f"{kind}-{seed}.{ext}", seeds, _low_res(dpi, quality), lines)
    if kind == "two_column":
        style = ScanStyle(dpi=200, jpeg_quality=50, angle=0.5, columns=2, fontsize=10.0, clinical=0.15)
        return _scan_pdf_sample(kind, directory / f"{kind}-{seed}.pdf", seeds, style, lines)
    if kind == "table":
        style = ScanStyle(dpi=200, jpeg_quality=50, angle=0.4, blur=0.6)
        table = [table_page(s, style, rows=lines or 12) for s in seeds]
        path = directory / f"{kind}-{seed}.pdf"
        doc = pymupdf.open()
        for page in table:
            out = doc.new_page(width=style.page_size[0], height=style.page_size[1])
            out.insert_image(out.rect, stream=encode_jpeg(page.image, style.jpeg_quality))
        doc.save(path)
        doc.close()
        return Sample(kind, path, [p.text for p in table])
    if kind.startswith("fax"):
        vertical = SAMPLES[kind][1]
        style = ScanStyle(dpi=200, angle=0.5, blur=0.4, noise=3.0, clinical=0.25)
        scans = [scanned_page(s, style, lines) for s in seeds]
        path = directory / f"{kind}-{seed}.tif"
        fax_tiff(path, [fax_page(p, vertical) for p in scans], (200, vertical))
        return Sample(kind, path, [p.text for p in scans])
    if kind == "photo":
        page = scanned_page(seeds[0], ScanStyle(dpi=300, angle=0.0, blur=0.0, noise=0.0, clinical=0.25), lines)
        path = directory / f"{kind}-{seed}.jpg"
        path.write_bytes(encode_jpeg(photo_of_page(page, seed), 80))
        return Sample(kind, path, [page.text])
    raise ValueError(f"unknown sample kind {kind!r}")


# kind: (dpi, JPEG quality) for scans, (horizontal, vertical) dpi for faxes; the rest are fixed.
SAMPLES: dict[str, tuple[int, int] | None] = {
    "scan300_q60": (300, 60),
    "scan200_q50": (200, 50),
    "scan150_q40": (150, 40),
    "scan110_q35": (110, 35),
    "scan100_q30": (100, 30),
    "fax_fine": (200, 200),
    "fax_normal": (200, 100),
    "photo": None,
    "two_column": None,
    "table": None,
}


def column_text(lines: list[tuple[list[list[float]], str]], page_width: float, columns: int) -> str:
    """OCR lines read column by column (by the centre of each box), top to bottom in each:
    how a two-column page's truth is written, whatever order an engine returned."""
    if columns == 1:
        return "\n".join(text for _, text in lines)
    buckets: list[list[tuple[float, str]]] = [[] for _ in range(columns)]
    for box, text in lines:
        xs = [p[0] for p in box]
        ys = [p[1] for p in box]
        centre = (min(xs) + max(xs)) / 2
        buckets[min(columns - 1, int(centre / page_width * columns))].append(((min(ys) + max(ys)) / 2, text))
    return "\n".join(text for bucket in buckets for _, text in sorted(bucket))


# --- bad inputs -----------------------------------------------------------------

def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def unsupported_file(path: Path) -> Path:
    """A GIF: a real image format that the worker does not take."""
    path.write_bytes(b"GIF89a" + struct.pack("<HH", 1, 1) + b"\x80\x00\x00\xff\xff\xff\x00\x00\x00"
                     b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
    return path


def corrupt_pdf(path: Path) -> Path:
    """A PDF header followed by garbage: no objects, no pages."""
    rng = random.Random(5)
    path.write_bytes(b"%PDF-1.7\n" + bytes(rng.randrange(256) for _ in range(4000)))
    return path


def truncated_pdf(path: Path, source: Path, keep: float = 0.5) -> Path:
    """The first part of a real PDF, as an interrupted upload leaves it."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def encrypted_pdf(path: Path, password: str = "secret") -> Path:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "Confidential", fontname="helv", fontsize=12)
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw=password, owner_pw=password + "-owner")
    doc.close()
    return path


def many_pages_pdf(path: Path, pages: int) -> Path:
    doc = pymupdf.open()
    for _ in range(pages):
        doc.new_page(width=A6[0], height=A6[1])
    doc.save(path)
    doc.close()
    return path


def huge_page_pdf(path: Path, inches: float = 200.0) -> Path:
    """One page of `inches` square (PDF allows up to 200 in): 3.6 G pixels at 300 dpi."""
    doc = pymupdf.open()
    doc.new_page(width=inches * 72, height=inches * 72)
    doc.save(path)
    doc.close()
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, side: int = 100_000) -> Path:
    """A PNG that declares side×side grey pixels; the stream compresses ~1000:1, so it is small on
    disk, but decoding it would need side² bytes (10 G for the default)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    # One row of real data is enough for the file to look valid; a decoder would only
    # find out it is short after allocating the whole image.
    rows = zlib.compress(b"\x00" + b"\x00" * side, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows)
                     + _png_chunk(b"IEND", b""))
    return path


def jpeg_bomb(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A small real JPEG whose frame header is rewritten to declare a huge size."""
    data = bytearray(encode_jpeg(np.full((16, 16), 200, np.uint8)))
    i = 2
    while i < len(data):
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            break
        i += 2 + length
    path.write_bytes(bytes(data))
    return path


def tiff_bomb(path: Path, width: int = 50000, height: int = 50000) -> Path:
    """A TIFF whose only page declares width×height pixels (uncompressed strips it does not have)."""
    entries = [
        (256, 4, 1, width),        # ImageWidth (LONG)
        (257, 4, 1, height),       # ImageLength
        (258, 3, 1, 8),            # BitsPerSample
        (259, 3, 1, 1),            # Compression: none
        (262, 3, 1, 1),            # Photometric: black is zero
        (273, 4, 1, 8),            # StripOffsets
        (277, 3, 1, 1),            # SamplesPerPixel
        (278, 4, 1, height),       # RowsPerStrip
        (279, 4, 1, width * height & 0xFFFFFFFF),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd)
    return path


def pdf_with_bomb_image(path: Path, side: int = 30000) -> Path:
    """A PDF page holding one image XObject that declares side×side pixels (Flate, tiny on disk)."""
    doc = pymupdf.open()
    page = doc.new_page()
    # A real small image first, then its dictionary is made to declare a huge size.
    page.insert_image(page.rect, stream=encode_png(np.full((8, 8), 128, np.uint8)))
    xref = page.get_images()[0][0]
    stream = zlib.compress(b"\x80" * (side * 4), 9)  # a short stream; the decoder would learn late
    doc.update_stream(xref, stream, compress=False)
    doc.xref_set_key(xref, "Width", str(side))
    doc.xref_set_key(xref, "Height", str(side))
    doc.xref_set_key(xref, "Filter", "/FlateDecode")
    doc.xref_set_key(xref, "DecodeParms", "null")
    doc.xref_set_key(xref, "SMask", "null")
    doc.save(path)
    doc.close()
    return path


def big_file(path: Path, megabytes: float) -> Path:
    """A PDF padded past `megabytes` with a comment block after the header."""
    doc = pymupdf.open()
    doc.new_page()
    body = doc.tobytes()
    doc.close()
    pad = b"%" + b"x" * 1022 + b"\n"
    with open(path, "wb") as fh:
        fh.write(body[:9])
        for _ in range(int(megabytes * 1024) + 1):
            fh.write(pad)
        fh.write(body[9:])
    return path


# --- scoring --------------------------------------------------------------------

def levenshtein(a: str, b: str) -> int:
    """Edit distance by Hyyrö's bit-parallel algorithm: fast on page-long strings in pure Python."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    mask = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def normalise(text: str, spaces: bool) -> str:
    """Compare what a reader sees: every run of whitespace (line breaks too) is one space,
    or nothing at all when `spaces` is False."""
    words = text.split()
    return " ".join(words) if spaces else "".join(words)


def cer(truth: str, hypothesis: str, spaces: bool = True) -> float:
    """Character error rate: edits to turn the OCR text into the truth, per character of truth."""
    ref, hyp = normalise(truth, spaces), normalise(hypothesis, spaces)
    return levenshtein(ref, hyp) / max(1, len(ref))


_DATE = __import__("re").compile(r"^\d{2}/\d{2}/\d{4}[,.;:]?$")


def clinical_tokens(text: str) -> list[str]:
    """The words of `text` that a clinical reader checks: units, drug and lab names, doses, dates."""
    vocabulary = set(DRUGS) | set(UNITS) | set(LABS)
    out = []
    for word in text.split():
        bare = word.rstrip(",.;:")
        if bare in vocabulary or _DATE.match(word) or bare.replace(".", "", 1).isdigit():
            out.append(bare)
    return out


def token_errors(truth: str, hypothesis: str) -> tuple[int, int]:
    """(clinical tokens of the truth missing from the OCR text, clinical tokens in the truth),
    counted as multisets: "mcg" read as "meg" is one missing token."""
    from collections import Counter

    want = Counter(clinical_tokens(truth))
    got = Counter(word.rstrip(",.;:") for word in hypothesis.split())
    missing = sum(max(0, count - got[token]) for token, count in want.items())
    return missing, sum(want.values())
