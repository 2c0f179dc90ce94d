"""TIFF pages read a page at a time with Pillow (`ocr.TiffPages`) match what MuPDF makes of them:
the same page size in points, the same scan resolution, the same pixels within a grey level or two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pymupdf
import pytest
from PIL import Image

from docsuper.passes import ocr


def _page_image(width: int, height: int) -> np.ndarray:
    """A white page with dark bars and a grey ramp: scaling differences show, text is not needed."""
    image = np.full((height, width), 255, np.uint8)
    image[height // 8: height // 8 + max(2, height // 50), width // 10: width - width // 10] = 0
    for x in range(width // 10, width - width // 10, max(4, width // 40)):
        image[height // 3: height // 2, x: x + max(1, width // 200)] = 30
    image[height * 2 // 3:, :] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    return image


def _tiffs(tmp_path: Path) -> dict[str, Path]:
    page = _page_image(1240, 1754)  # A4 at 150 dpi
    files = {}
    files["gray_lzw_2_pages"] = tmp_path / "gray.tif"
    frames = [Image.fromarray(page), Image.fromarray(255 - page)]
    frames[0].save(files["gray_lzw_2_pages"], save_all=True, append_images=frames[1:], dpi=(150, 150),
                   compression="tiff_lzw")
    files["fax_200x100_g4"] = tmp_path / "fax.tif"
    fax = np.where(_page_image(1728, 1100) < 128, 0, 255).astype(np.uint8)
    Image.fromarray(fax).convert("1").save(files["fax_200x100_g4"], dpi=(200, 100), compression="group4")
    files["no_resolution"] = tmp_path / "plain.tif"
    Image.fromarray(page).save(files["no_resolution"])
    files["sixteen_bit"] = tmp_path / "deep.tif"
    Image.fromarray(page.astype(np.uint16) * 257).save(files["sixteen_bit"], dpi=(150, 150))
    files["rgb_per_cm"] = tmp_path / "rgb.tif"
    Image.fromarray(np.dstack([page] * 3)).save(files["rgb_per_cm"], resolution_unit=3, resolution=59.06,
                                                 compression="tiff_lzw")  # 150 dpi, in dots per cm
    return files


def _mupdf_gray(page: pymupdf.Page, zoom: float) -> np.ndarray:
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csGRAY, alpha=False)
    return np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, :pix.width].copy()


@pytest.mark.parametrize("name", ["gray_lzw_2_pages", "fax_200x100_g4", "no_resolution", "sixteen_bit",
                                  "rgb_per_cm"])
def test_a_tiff_page_reads_as_mupdf_renders_it(tmp_path: Path, name: str):
    path = _tiffs(tmp_path)[name]
    mupdf = pymupdf.open(path, filetype="tiff")
    pages = ocr.TiffPages(path, mupdf.page_count)
    for index in range(mupdf.page_count):
        page = mupdf.load_page(index)
        width, height, source = pages.page(index)
        assert (width, height) == (pytest.approx(page.rect.width, abs=0.5), pytest.approx(page.rect.height, abs=0.5))
        assert source == pytest.approx(ocr.source_dpi(page), abs=0.5)
        for dpi in (200, 100, 300):
            zoom = dpi / 72 if abs(source - 96) > 0.5 else 1.0
            ours = pages.render(index, zoom)
            theirs = _mupdf_gray(page, zoom)
            assert isinstance(ours.base, np.ndarray) or isinstance(ours.base, bytes)
            assert abs(ours.shape[0] - theirs.shape[0]) <= 1 and abs(ours.shape[1] - theirs.shape[1]) <= 1
            h, w = min(ours.shape[0], theirs.shape[0]), min(ours.shape[1], theirs.shape[1])
            difference = np.abs(ours[:h, :w].astype(int) - theirs[:h, :w].astype(int))
            assert difference.mean() < 3, (name, index, dpi, difference.mean())


@pytest.mark.parametrize("declared, mupdf", [
    ({}, (96, 96)),                                        # no resolution: unknown, MuPDF's 96
    ({"resolution_unit": 1, "resolution": 150}, (96, 96)),  # no absolute unit: unknown too
    ({"dpi": (200, 100)}, (200, 100)),                     # a normal-mode fax
    ({"dpi": (30, 30)}, (72, 72)),                         # implausible: MuPDF's sane minimum
    ({"dpi": (300, 30)}, (720, 72)),                       # ... keeping the aspect it declares
    ({"dpi": (10000, 10000)}, (72, 72)),
])
def test_the_resolution_of_a_tiff_page_is_mupdfs(tmp_path: Path, declared: dict, mupdf: tuple[int, int]):
    path = tmp_path / "page.tif"
    Image.fromarray(np.full((400, 300), 255, np.uint8)).save(path, **declared)
    rect = pymupdf.open(path, filetype="tiff")[0].rect
    assert (round(300 * 72 / rect.width), round(400 * 72 / rect.height)) == mupdf  # what MuPDF makes of it
    width, height, source = ocr.TiffPages(path, 1).page(0)
    assert (round(300 * 72 / width), round(400 * 72 / height)) == mupdf
    assert source == max(mupdf)


def test_an_undecodable_tiff_page_is_a_damaged_document(tmp_path: Path):
    """A page whose strips are cut off (the directory is sound, so validation lets it through)
    ends the job as damaged input with the page named, as MuPDF's failures did."""
    from docsuper.passes import inputs
    from docsuper.passes.api import InvalidInput
    from docsuper.supervisor.config import load_config

    path = _tiffs(tmp_path)["gray_lzw_2_pages"]
    with Image.open(path) as image:
        strips_end = max(o + n for o, n in zip(image.tag_v2[273], image.tag_v2[279]))
        first_strip = min(image.tag_v2[273])
    data = bytearray(path.read_bytes())
    data[first_strip:strips_end] = b"\xff" * (strips_end - first_strip)  # not LZW any more
    path.write_bytes(bytes(data))
    document = inputs.Document(path=path, kind="tiff", pages=2, size=len(data), source=str(path))
    settings = ocr.OcrSettings.from_config(load_config(None, {}).as_dict())
    with pytest.raises(InvalidInput, match=r"damaged document: page 1 cannot be rendered"):
        ocr.read_page(ocr.TiffPages(path, 2), 0, document, settings)
