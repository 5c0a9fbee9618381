"""A deterministic corpus of realistic documents for benchmarks: ``.txt`` files and multi-page
PDFs of generated prose, cached by (files, seed) so repeated benchmarks reuse it.

    python -m bench.corpus --files 500 --out bench/.corpus/500
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

FIXED_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
CACHE = Path(__file__).resolve().parent / ".corpus"

TOPICS = {
    "glaciology": ["glacier", "moraine", "cirque", "meltwater", "crevasse", "ice sheet", "firn",
                   "ablation zone", "rock flour", "terminal lake", "snowline", "outlet valley"],
    "baking": ["sourdough", "levain", "gluten network", "hydration", "proofing basket", "crumb",
               "crust", "starter culture", "bulk fermentation", "oven spring", "rye flour"],
    "energy": ["heat pump", "compressor", "refrigerant", "coefficient of performance", "borehole",
               "radiator", "flow temperature", "grid tariff", "battery", "inverter", "solar array"],
    "law": ["tenancy agreement", "deposit", "notice period", "landlord", "arbitration clause",
            "liability", "indemnity", "statutory instrument", "court of appeal", "remedy"],
    "medicine": ["blood pressure", "beta blocker", "clinical trial", "placebo group", "dosage",
                 "side effect", "cohort", "randomisation", "hypertension", "renal function"],
}
VERBS = ["shapes", "limits", "explains", "reduces", "supports", "follows from", "depends on",
         "changes", "protects", "measures", "exposes", "replaces", "strengthens", "delays"]
ADJECTIVES = ["seasonal", "gradual", "unexpected", "measurable", "modest", "persistent",
              "regional", "early", "late", "careful", "typical", "marked", "local", "steady"]
CONNECTIVES = ["However,", "In practice,", "As a result,", "For example,", "By contrast,",
               "Over time,", "In most cases,", "According to the survey,", "Later,", "Meanwhile,"]


def sentence(rng: random.Random, words: list[str]) -> str:
    a, b, c = rng.sample(words, 3)
    parts = [f"the {rng.choice(ADJECTIVES)} {a} {rng.choice(VERBS)} the {b}"]
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        parts.append(f"{rng.choice(['while', 'because', 'and', 'although', 'so that'])} the "
                     f"{c} {rng.choice(VERBS)} {rng.randint(2, 97)} {rng.choice(['percent', 'units', 'days', 'metres'])}")
    text = " ".join(parts)
    if rng.random() < 0.3:
        text = f"{rng.choice(CONNECTIVES)} {text}"
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "?", "!"] if rng.random() < 0.1 else ".")


def paragraph(rng: random.Random, words: list[str]) -> str:
    return " ".join(sentence(rng, words) for _ in range(rng.randint(2, 7)))


def page_text(rng: random.Random, words: list[str], target_words: int) -> str:
    paragraphs, count = [], 0
    while count < target_words:
        p = paragraph(rng, words)
        paragraphs.append(p)
        count += len(p.split())
    return "\n\n".join(paragraphs)


def _typeset(pdf, text: str) -> None:
    """One page's text in 11-point Helvetica, paragraph by paragraph."""
    pdf.set_font("Helvetica", size=11)
    for block in text.strip().split("\n\n"):
        pdf.multi_cell(0, 6, " ".join(block.split()))
        pdf.ln(3)


def write_pdf(path: Path, pages: list[str], *, title: str = "", drawings_only: bool = False) -> Path:
    """A PDF with one page per string (core Helvetica font: Latin-1 text only)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(title or path.stem)
    pdf.set_auto_page_break(auto=True, margin=15)
    for text in pages:
        pdf.add_page()
        if drawings_only:  # shapes but no text layer, like a scan
            pdf.set_fill_color(200, 200, 200)
            pdf.rect(20, 20, 170, 40, style="F")
            pdf.rect(20, 80, 120, 10, style="F")
            continue
        _typeset(pdf, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


@dataclass(frozen=True)
class Scan:
    """How a page is "scanned": resolution (dots per inch), rotation (degrees), noise (the
    standard deviation of Gaussian grey-level noise, 0-255) and speckle (share of pixels flipped
    to black or white)."""

    dpi: int = 200
    skew: float = 0.0
    noise: float = 0.0
    speckle: float = 0.0


def write_scanned_pdf(path: Path, pages: list[tuple[str, bool]], *, scan: Scan = Scan(),
                      seed: int = 0) -> Path:
    """A PDF whose pages are ``(text, scanned)``: a scanned page is an image of the text as
    ``write_pdf`` would typeset it (rendered by PDFium, degraded as ``scan`` says), with no text
    layer; the others are ordinary text pages. Needs the ``ocr`` and ``test`` extras."""
    import io
    import tempfile

    import numpy as np
    import pypdfium2
    from fpdf import FPDF
    from PIL import Image

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        typeset = write_pdf(Path(tmp) / "typeset.pdf", [text for text, _ in pages])
        rendered = pypdfium2.PdfDocument(typeset)
        pdf = FPDF(format="A4")
        pdf.set_creation_date(FIXED_DATE)
        pdf.set_title(path.stem)
        pdf.set_auto_page_break(auto=True, margin=15)
        for number, (text, scanned) in enumerate(pages):
            if not scanned:
                # The text page again, typeset the same way (one page per string).
                pdf.add_page()
                _typeset(pdf, text)
                continue
            image = rendered[number].render(scale=scan.dpi / 72, grayscale=True).to_pil().convert("L")
            if scan.skew:
                image = image.rotate(scan.skew, resample=Image.Resampling.BICUBIC, fillcolor=255)
            pixels = np.asarray(image, dtype=np.float32)
            if scan.noise:
                pixels = pixels + rng.normal(0.0, scan.noise, pixels.shape)
            if scan.speckle:
                flips = rng.random(pixels.shape)
                pixels[flips < scan.speckle / 2] = 0
                pixels[flips > 1 - scan.speckle / 2] = 255
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            pdf.add_page()
            pdf.image(buffer, x=0, y=0, w=pdf.w, h=pdf.h)
        rendered.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def generate_corpus(folder: Path, files: int, *, seed: int = 1, pdf_share: float = 0.5) -> Path:
    """Write ``files`` documents (half PDFs of 1–6 pages, half texts of 150–1,500 words)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(files):
        topic = rng.choice(sorted(TOPICS))
        words = TOPICS[topic]
        name = f"{topic}-{n:05d}"
        if rng.random() < pdf_share:
            pages = [page_text(rng, words, rng.randint(120, 330)) for _ in range(rng.randint(1, 6))]
            write_pdf(folder / topic / f"{name}.pdf", pages, title=name)
        else:
            (folder / topic).mkdir(exist_ok=True)
            (folder / topic / f"{name}.txt").write_text(page_text(rng, words, rng.randint(150, 1500)))
    return folder


def isolated_run_environment(prefix: str) -> Path:
    """Before Prefect is imported: no telemetry, quiet console, a fresh embedded store folder."""
    import os
    import tempfile

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["INGEST_QDRANT_PATH"] = str(workdir / "store")
    return workdir


def cached_corpus(files: int, seed: int = 1) -> Path:
    """The corpus for (files, seed), generated on first use under ``bench/.corpus``."""
    folder = CACHE / f"{files}-{seed}"
    done = folder / ".complete"
    if not done.exists():
        generate_corpus(folder, files, seed=seed)
        done.write_text("ok\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folder = generate_corpus(args.out, args.files, seed=args.seed) if args.out else cached_corpus(args.files, args.seed)
    print(folder)


if __name__ == "__main__":
    main()
