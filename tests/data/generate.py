"""Write the shipped samples (``samples/``) and the test corpus (``tests/data/``).

Run ``python tests/data/generate.py``. The outputs are committed; this script documents where
they came from and regenerates them byte for byte (fpdf2 with a fixed creation date, fixed
random seeds), except the encrypted PDFs, whose salts are random. Needs the ``test`` extra.
"""

from __future__ import annotations

import io
import random
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run as a script from anywhere

from bench.corpus import write_pdf  # noqa: E402

SAMPLES = HERE.parent.parent / "samples"
MIXED = HERE / "mixed"


ALPINE_LAKES = [
    """Field Guide to Alpine Lakes - Part 1: How glacial lakes form

    Most alpine lakes are the work of glaciers. As a glacier advances it plucks blocks of bedrock
    and grinds the valley floor, carving an overdeepened basin called a cirque or a trough.

    When the ice retreats, the hollow fills with meltwater. A ridge of rubble left at the former
    glacier snout, the terminal moraine, often dams the valley and holds the lake in place.

    Tarns are the small lakes that sit in cirques high on a mountain. Paternoster lakes are
    chains of basins strung along one valley like beads on a rosary.""",
    """Field Guide to Alpine Lakes - Part 2: Why glacial lakes are turquoise

    The milky turquoise colour of many glacial lakes comes from rock flour: silt ground so fine
    by the moving ice that it stays suspended in the water for weeks.

    The tiny particles scatter blue and green wavelengths of sunlight back to the eye, while the
    water absorbs the red end of the spectrum. Lakes fed by active glaciers are the most vivid
    in late summer, when melt is strongest and the most flour reaches them.

    Clear alpine lakes without glacial inflow look deep blue instead, because pure water
    absorbs red light and little else scatters the remaining blue.""",
    """Field Guide to Alpine Lakes - Part 3: Fish and fishing rules

    Few alpine lakes held fish naturally; most trout populations were stocked in the last
    century. Brook trout and cutthroat trout tolerate the cold, oxygen-rich water well.

    Anglers need a regional fishing licence. Many high lakes allow only artificial lures with a
    single barbless hook, and some are closed until the ice has been off for two weeks so the
    spawning fish are left alone.""",
    """Field Guide to Alpine Lakes - Part 4: Ice and winter safety

    High lakes freeze from late autumn until early summer. Ice near inlets and outlets stays
    thin because moving water keeps delivering warmth from below.

    Never cross lake ice in spring: snow insulates the surface and hides candled ice that has
    lost its strength. Clear black ice at least ten centimetres thick is the minimum for a
    person on foot, and grey or slushy ice should be avoided altogether.""",
]

SOURDOUGH = [
    """The Sourdough Handbook - Keeping a starter

    A sourdough starter is a culture of wild yeast and lactic acid bacteria living in flour and
    water. Feed it at a ratio of one part starter, one part flour and one part water by weight.

    Kept at room temperature it wants feeding every twelve hours; in the refrigerator once a
    week is enough. A healthy starter doubles in four to six hours and smells pleasantly sour.""",
    """The Sourdough Handbook - A baking schedule

    Mix the levain in the evening. The next morning combine it with flour, water and salt, then
    give the dough four sets of stretch and folds half an hour apart.

    Let the dough rise until it has grown by about half, shape it, and proof it overnight in the
    refrigerator. Bake in a preheated Dutch oven at 250 degrees Celsius for twenty minutes with
    the lid on and twenty-five minutes with the lid off.""",
]

HEAT_PUMPS = """How heat pumps heat a house

A heat pump does not burn anything. It moves heat that is already there: a refrigerant
evaporates in the outdoor unit, absorbing heat even from cold winter air, and a compressor
raises its pressure and temperature so it can release that heat indoors.

The ratio of heat delivered to electricity used is the coefficient of performance (COP).
Modern air-source heat pumps reach a COP of three to four in mild weather, which means three
to four kilowatt-hours of heat for every kilowatt-hour of electricity.

Efficiency falls as the outdoor temperature drops, because the pump has to lift heat across
a larger temperature difference. Ground-source heat pumps avoid most of that loss: a few
metres below the surface the soil stays at a steady ten degrees all year.

Underfloor heating suits heat pumps best, since it works with water at 35 degrees rather than
the 70 degrees that old radiators were sized for.
"""

CAFE_NOTES = """Notes de torréfaction — café de spécialité

La torréfaction transforme le grain vert en café aromatique. Vers 200 °C, la première
craquelure annonce une torréfaction claire, qui garde l'acidité et les arômes fruités.

Un café d'Éthiopie lavé révèle des notes de jasmin et d'agrumes ; un grain du Brésil,
torréfié plus longtemps, donne du chocolat et de la noisette. Laissez reposer le café
quarante-huit heures après la torréfaction : le dégazage améliore l'extraction.
"""


def tiny_png() -> bytes:
    """A valid 1x1 grey PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


def encrypt_pdf(source: Path, target: Path, *, user_password: str, owner_password: str) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    target.write_bytes(buffer.getvalue())


def operator_flood_pdf(operators: int, *, text: str = "word") -> bytes:
    """A few-KB PDF whose one page holds ``operators`` text-showing operators (Flate-compressed):
    pypdf needs ~3 s and ~140 MB per 100,000 of them. Hostile input for the parse limits; with
    a longer ``text``, a small file that inflates to much text (``operators × len(text)``)."""
    from fpdf import FPDF
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import DecodedStreamObject, NameObject

    doc = FPDF()
    doc.add_page()
    doc.set_font("helvetica", size=12)
    doc.cell(text="flood")
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(bytes(doc.output()))))
    page = writer.pages[0]
    font = next(iter(page["/Resources"]["/Font"]))
    stream = DecodedStreamObject()
    stream.set_data(f"BT {font} 12 Tf 72 720 Td ".encode()
                    + f"({text} ) Tj 1 0 Td ".encode() * operators + b"ET")
    page[NameObject("/Contents")] = writer._add_object(stream.flate_encode())
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def composite_font_pdf(lines: list[str], *, wide: str = "m", gap: int = -250, kern: int = -30) -> bytes:
    """A one-page PDF set the way TeX sets text in a composite font: a Type0 font (Identity-H,
    a ToUnicode map) without a space glyph, each word gap an offset of ``gap`` thousandths of an
    em in a ``TJ`` array, a ``kern`` between a word's first two letters, and the letter ``wide``
    (833 wide; the others 500) at CID 32 — where pypdf 7.1 looks for the space's width
    (py-pdf/pypdf#3978)."""
    from pypdf import PdfWriter
    from pypdf.generic import (
        ArrayObject,
        DecodedStreamObject,
        DictionaryObject,
        NameObject,
        NumberObject,
        TextStringObject,
    )

    letters = sorted({c for line in lines for c in line if c != " "} - {wide})
    cids = {wide: 32} | {c: 33 + i for i, c in enumerate(letters)}
    cmap = DecodedStreamObject()
    cmap.set_data("\n".join([
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap",
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
        "/CMapName /Adobe-Identity-UCS def /CMapType 2 def",
        "1 begincodespacerange <0000> <FFFF> endcodespacerange",
        f"{len(cids)} beginbfchar",
        *(f"<{cid:04X}> <{ord(c):04X}>" for c, cid in cids.items()),
        "endbfchar endcmap CMapName currentdict /CMap defineresource pop end end"]).encode())
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    widths = ArrayObject([NumberObject(32), ArrayObject([NumberObject(833)])]
                         + [NumberObject(33), ArrayObject([NumberObject(500)] * len(letters))])
    descendant = DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/CIDFontType2"),
        NameObject("/BaseFont"): NameObject("/ABCDEF+Serif"), NameObject("/DW"): NumberObject(1000),
        NameObject("/W"): widths,
        NameObject("/CIDSystemInfo"): DictionaryObject({
            NameObject("/Registry"): TextStringObject("Adobe"),
            NameObject("/Ordering"): TextStringObject("Identity"),
            NameObject("/Supplement"): NumberObject(0)})})
    font = DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type0"),
        NameObject("/BaseFont"): NameObject("/ABCDEF+Serif"), NameObject("/Encoding"): NameObject("/Identity-H"),
        NameObject("/DescendantFonts"): ArrayObject([writer._add_object(descendant)]),
        NameObject("/ToUnicode"): writer._add_object(cmap)})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject(
        {NameObject("/F1"): writer._add_object(font)})})

    def hex_of(word: str) -> str:
        return "".join(f"{cids[c]:04X}" for c in word)

    shown = []
    for number, line in enumerate(lines):
        parts = []
        for word in line.split():
            parts.append(f"<{hex_of(word[:1])}> {kern} <{hex_of(word[1:])}>" if len(word) > 1
                         else f"<{hex_of(word)}>")
        shown.append(f"1 0 0 1 72 {720 - 14 * number} Tm [{f' {gap} '.join(parts)}] TJ")
    content = DecodedStreamObject()
    content.set_data(("BT /F1 10 Tf " + " ".join(shown) + " ET").encode())
    page[NameObject("/Contents")] = writer._add_object(content)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def misplaced_xref_pdf(source: Path) -> bytes:
    """``source`` with its ``startxref`` pointing at the wrong offset: pypdf repairs it and reads
    every page, warning about it through ``logging`` as it goes."""
    import re

    data = source.read_bytes()
    tail = data.rfind(b"startxref")
    return data[:tail] + re.sub(rb"startxref\s+\d+", b"startxref\n123", data[tail:])


def write_samples() -> None:
    write_pdf(SAMPLES / "alpine-lakes-field-guide.pdf", ALPINE_LAKES, title="Field Guide to Alpine Lakes")
    write_pdf(SAMPLES / "sourdough-handbook.pdf", SOURDOUGH, title="The Sourdough Handbook")
    write_pdf(SAMPLES / "scanned-receipt.pdf", ["receipt"], title="Scanned receipt", drawings_only=True)
    (SAMPLES / "heat-pumps.txt").write_text(HEAT_PUMPS, encoding="utf-8")
    # A legacy code page on purpose: the reader must detect it.
    (SAMPLES / "notes-torrefaction-cp1252.txt").write_bytes(CAFE_NOTES.encode("cp1252"))


def write_mixed_batch() -> None:
    """One file per outcome kind; tests/flows and tests/integration assert on each."""
    MIXED.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    guide = write_pdf(MIXED / "alpine-lakes.pdf", ALPINE_LAKES, title="Field Guide to Alpine Lakes")
    (MIXED / "heat-pumps.txt").write_text(HEAT_PUMPS, encoding="utf-8")
    (MIXED / "cafe-utf16.txt").write_bytes(CAFE_NOTES.encode("utf-16"))
    (MIXED / "cafe-cp1252.txt").write_bytes(CAFE_NOTES.encode("cp1252"))
    sourdough = write_pdf(HERE / "sourdough.pdf", SOURDOUGH, title="The Sourdough Handbook")
    (MIXED / "sourdough-really-a-pdf.txt").write_bytes(sourdough.read_bytes())
    encrypt_pdf(sourdough, MIXED / "encrypted.pdf", user_password="s3cret", owner_password="owner")
    encrypt_pdf(sourdough, MIXED / "owner-password-only.pdf", user_password="", owner_password="owner")
    write_pdf(MIXED / "scanned.pdf", ["scan"], title="Scan", drawings_only=True)
    (MIXED / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + bytes(rng.randrange(256) for _ in range(3000)))
    (MIXED / "photo-named.pdf").write_bytes(tiny_png())
    (MIXED / "picture.png").write_bytes(tiny_png())
    (MIXED / "empty.txt").write_bytes(b"")
    (MIXED / "binary.txt").write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    (MIXED / ".hidden-notes.txt").write_text("hidden files are never listed\n")
    truncated = guide.read_bytes()
    (HERE / "truncated.pdf").write_bytes(truncated[: len(truncated) // 2])


def main() -> None:
    write_samples()
    write_mixed_batch()


if __name__ == "__main__":
    main()
