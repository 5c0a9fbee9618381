"""OCR accuracy and cost (``make bench-ocr``): character error rate on pages scanned here from
known text, seconds per page, and what the fallback costs a batch without scans.

    python -m bench.ocr                  (accuracy and cost; then throughput, OCR auto vs off)
    python -m bench.ocr --no-throughput  (accuracy and cost only)
    python -m bench.ocr --no-accuracy    (throughput only)

Pages: real text from the retrieval benchmark's public documents (``bench/eval/docs``: Twain,
the 1911 drill regulations, German federal laws, Verne), typeset in 11-point Helvetica on A4,
rendered by PDFium and degraded like a scan (``bench.corpus.Scan``: resolution, skew, grey
noise, speckles), written as image-only PDFs. Each page is read the way the pipeline reads it
(``readers.read_pdf`` with ``INGEST_OCR=force``, in this process). CER = Levenshtein edits per
reference character, white space normalised (``rapidfuzz``).

Real image PDFs: ``bench/ocr_real`` (a scanned page of the 1885 first edition of Huckleberry
Finn, public domain; an image of a French pangram, CC BY-SA 4.0; both from OCRmyPDF's test
resources, see its ``sources.json``) against transcripts made for them.

Throughput: the generated corpus (no scans) ingested by the real flow with ``INGEST_OCR=auto``
and ``off`` in interleaved rounds; the ratio auto/off of chunks per second, median of rounds.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).parent / "eval" / "docs"
#: (language, file, where its prose starts): one page of running text from each.
SOURCES = (
    ("en", "en-twain-tom-sawyer.txt", "CHAPTER I"),
    ("en", "en-infantry-drill-regulations-1911.txt", "ORDERS, COMMANDS, AND SIGNALS"),
    ("de", "de-arbeitszeitgesetz.txt", "§ 3"),
    ("de", "de-grimm-maerchen-excerpt.txt", "Es war einmal"),
    ("fr", "fr-verne-deux-ans-de-vacances-excerpt.txt", "Pendant la nuit"),
)
#: Scan variants, each read at the default render resolution.
VARIANTS = {
    "clean 300 dpi": dict(dpi=300),
    "clean 200 dpi": dict(dpi=200),
    "clean 150 dpi": dict(dpi=150),
    "low resolution (100 dpi)": dict(dpi=100),
    "noisy (sigma 30, speckles)": dict(dpi=200, noise=30, speckle=0.003),
    "skewed 2 degrees": dict(dpi=200, skew=2.0),
    "rough (150 dpi, skew 1.5, noise)": dict(dpi=150, skew=1.5, noise=25, speckle=0.002),
}
#: Render resolutions compared on the "clean 300 dpi" scans (the setting INGEST_OCR_DPI).
RENDER_DPIS = (150, 200, 300)
WORDS_PER_PAGE = 330


def cer(reference: str, recognised: str) -> float:
    """Character error rate: edits per character of the reference, white space normalised."""
    from rapidfuzz.distance import Levenshtein

    ref, hyp = " ".join(reference.split()), " ".join(recognised.split())
    return Levenshtein.distance(ref, hyp) / max(len(ref), 1)


REAL = Path(__file__).parent / "ocr_real"


def read_real_scans() -> dict:
    """CER and seconds per page on the real image PDFs in ``bench/ocr_real`` (origin, licence
    and checksum in its ``sources.json``), against their transcripts, at the default settings."""
    from tasks.core.ocr import OcrConfig, engine_version
    from tasks.core.readers import read_pdf

    config = OcrConfig(mode="auto", engine=engine_version())
    rows = {}
    for source in json.loads((REAL / "sources.json").read_text(encoding="utf-8")):
        data = (REAL / source["file"]).read_bytes()
        reference = (REAL / source["file"]).with_suffix(".txt").read_text(encoding="utf-8")
        wall, cpu = time.perf_counter(), time.process_time()
        document = read_pdf(data, max_pages=10, ocr=config)
        rows[source["file"]] = {
            "cer": round(cer(reference, "\n".join(p.text for p in document.pages)), 4),
            "s_per_page": round((time.perf_counter() - wall) / len(document.pages), 2),
            "cpu_s_per_page": round((time.process_time() - cpu) / len(document.pages), 2)}
    return rows


def page_texts() -> list[tuple[str, str]]:
    """(language, text of about one page) per source; Latin-1 only (the core font's range)."""
    pages = []
    for lang, name, start in SOURCES:
        text = (DOCS / name).read_text(encoding="utf-8", errors="replace")
        at = text.find(start)
        words = text[at if at >= 0 else 0:].split()[:WORDS_PER_PAGE]
        prose = " ".join(words).encode("latin-1", "ignore").decode("latin-1")
        pages.append((lang, prose))
    return pages


def read_scans(pages: list[tuple[str, str]], folder: Path, scan: dict, render_dpi: int) -> dict:
    """CER per language and seconds (wall, CPU) per page for one scan variant."""
    from bench.corpus import Scan, write_scanned_pdf
    from tasks.core.ocr import OcrConfig, engine_version
    from tasks.core.readers import read_pdf

    config = OcrConfig(mode="force", dpi=render_dpi, engine=engine_version())
    errors: dict[str, list[float]] = {}
    walls, cpus = [], []
    for index, (lang, text) in enumerate(pages):
        path = write_scanned_pdf(folder / f"{index}.pdf", [(text, True)], scan=Scan(**scan), seed=index)
        wall, cpu = time.perf_counter(), time.process_time()
        document = read_pdf(path.read_bytes(), max_pages=10, ocr=config)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        errors.setdefault(lang, []).append(cer(text, "\n".join(p.text for p in document.pages)))
    every = [e for values in errors.values() for e in values]
    return {"cer": round(statistics.mean(every), 4),
            **{f"cer_{lang}": round(statistics.mean(v), 4) for lang, v in errors.items()},
            "s_per_page": round(statistics.median(walls), 2),
            "cpu_s_per_page": round(statistics.median(cpus), 2)}


def throughput(files: int, rounds: int) -> dict:
    """Chunks per second of the flow on a corpus without scans, OCR auto vs off, interleaved."""
    from apps.prefect_api import prefect_api_ready
    from bench.corpus import cached_corpus, isolated_run_environment
    from flows.ingest_flow import ingest_documents

    isolated_run_environment("bench-ocr-")
    prefect_api_ready()
    corpus = cached_corpus(files)
    ingest_documents(sources=[str(next(corpus.rglob("*.txt")))], collection="warmup")
    rates: dict[str, list[float]] = {"auto": [], "off": []}
    for round_ in range(rounds):
        for mode in (("auto", "off") if round_ % 2 == 0 else ("off", "auto")):
            os.environ["INGEST_OCR"] = mode
            started = time.perf_counter()
            summary = ingest_documents(sources=[str(corpus)], collection=f"ocr-{mode}-{round_}")
            rates[mode].append(summary.totals.chunks_embedded / (time.perf_counter() - started))
            assert summary.totals.ocr_pages == 0
    os.environ.pop("INGEST_OCR", None)
    ratios = [a / o for a, o in zip(rates["auto"], rates["off"])]
    return {"files": files, "rounds": rounds,
            "chunks_per_s_auto": [round(r, 1) for r in rates["auto"]],
            "chunks_per_s_off": [round(r, 1) for r in rates["off"]],
            "auto_over_off": round(statistics.median(ratios), 3),
            "ratio_spread": round(max(ratios) - min(ratios), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-throughput", action="store_true", help="accuracy and cost only")
    parser.add_argument("--no-accuracy", action="store_true", help="throughput only")
    parser.add_argument("--files", type=int, default=120, help="corpus of the throughput runs")
    parser.add_argument("--rounds", type=int, default=4, help="throughput rounds (each: auto and off)")
    args = parser.parse_args()

    from tasks.core.ocr import engine_version

    pages = page_texts()
    print(f"{engine_version()}: {len(pages)} pages of real text "
          f"({', '.join(sorted({lang for lang, _ in pages}))}), ~{WORDS_PER_PAGE} words each")
    results: dict = {"engine": engine_version(), "variants": {}, "render_dpi": {}}
    variants, dpis = ({}, ()) if args.no_accuracy else (VARIANTS, RENDER_DPIS)
    with tempfile.TemporaryDirectory() as tmp:
        header = f"{'scan':<36}{'CER':>8}{'en':>8}{'de':>8}{'fr':>8}{'s/page':>9}{'CPU s':>8}"
        print("\nscan variants, rendered at 200 dpi\n" + header)
        for name, scan in variants.items():
            row = read_scans(pages, Path(tmp), scan, 200)
            results["variants"][name] = row
            print(f"{name:<36}{row['cer']:>8.4f}{row['cer_en']:>8.4f}{row['cer_de']:>8.4f}"
                  f"{row['cer_fr']:>8.4f}{row['s_per_page']:>9.2f}{row['cpu_s_per_page']:>8.2f}")
        print("\nrender resolution (INGEST_OCR_DPI), clean 300-dpi scans\n" + header)
        for dpi in dpis:
            row = read_scans(pages, Path(tmp), VARIANTS["clean 300 dpi"], dpi)
            results["render_dpi"][dpi] = row
            print(f"{f'{dpi} dpi':<36}{row['cer']:>8.4f}{row['cer_en']:>8.4f}{row['cer_de']:>8.4f}"
                  f"{row['cer_fr']:>8.4f}{row['s_per_page']:>9.2f}{row['cpu_s_per_page']:>8.2f}")
    if not args.no_accuracy:
        results["real"] = read_real_scans()
        print("\nreal image PDFs (bench/ocr_real), default settings")
        for name, row in results["real"].items():
            print(f"{name:<44}CER {row['cer']:.4f}   {row['s_per_page']:.2f} s/page")
        results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(f"\npeak RSS of this process (engine, pages): {results['peak_rss_mb']} MB")
    if not args.no_throughput:
        results["throughput"] = throughput(args.files, args.rounds)
        t = results["throughput"]
        print(f"\nbatch without scans ({t['files']} files, {t['rounds']} rounds): chunks/s "
              f"auto {t['chunks_per_s_auto']} vs off {t['chunks_per_s_off']}: auto/off "
              f"{t['auto_over_off']} (spread {t['ratio_spread']})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
