"""Throughput, side by side in one process: the padding-free encode limit, plain encode, the
pipeline (the real flow), and a seed-style sequential baseline, on the same corpus.

    python -m bench.throughput --files 300 --repeat 3     (make bench; FILES=50 REPEAT=1 for a quick check)
    python -m bench.throughput --folder DIR               (any folder of PDFs and .txt files)

1. limit  — ``Embedder.embed`` (``model.encode`` batch by batch) of exactly the chunks the
            pipeline produces, batches planned by token count so they carry (almost) no padding;
2. plain  — ``model.encode`` of the same chunks in their natural order, one call;
3. fast   — the limit again with torch autocast bf16 (where the CPU has native bf16), and with
            the runtime the default, ``INGEST_EMBED_PRECISION=auto``, selects on this CPU (bf16
            or fp32 on OpenVINO; skipped where it is fp32 on torch), and the cosine of its vectors
            to fp32;
4. pipeline — ``ingest_documents`` end to end (Prefect ephemeral mode, embedded Edge store), fp32
            and the default; ``backlog_s``: seconds after the flow returns until Prefect has
            recorded every task run;
5. seed   — per file, sequentially: read, chunk, encode that file's chunks, upsert that file (what
            a naive upload router does), same model, chunker and store backend;
6. bm25   — the BM25 sparse vectors of the same chunks (Qdrant Edge's embedder), which the
            pipeline computes beside the dense ones: its seconds over the pipeline's are the share
            of a run that hybrid search costs at ingest (``bm25_share_of_pipeline``).

7. rest   — the flow again with every model call answered at once: the CPU seconds of everything
            but the model (this process, Prefect's server, the parse workers), which on a machine
            the model keeps busy are taken from it; hence ``pipeline_ceiling_vs_raw``, the most
            ``pipeline_vs_raw`` can be here (the ids limit plus that CPU over the cores).

After each fp32 pipeline its model calls are replayed alone, batch by batch (``BatchLog``): where
the flow's time over the limit goes — its batches' seconds in the flow over alone
(``flow_batches_vs_replay``), and the share of that extra time in the slowest batches, as many as
the flow made model calls (``extra_share_slowest_per_call``), and in each call's first batch
(``extra_share_first_batches``).

Every step runs once per round, rounds interleaved, so slow drifts of the machine hit all steps
alike; ratios are medians of the per-round ratios (> 1 means faster) with their spread. The last
line is JSON. Peak RSS is the process's peak after each step; ``rss_ratio_10x`` compares the flow
alone, in fresh processes, on 100 and 1,000 generated files (``--rss-files``), which also gives
Prefect's backlog after a 1,000-file run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def produce_chunks(corpus: Path, config) -> tuple[list[str], list[int], int, list]:
    """The pipeline's own chunks for every file of the corpus (readers + chunker): texts, token
    counts, files, and the chunker's token ids."""
    from tasks.core.errors import FileRejected
    from tasks.core.readers import read_document
    from tasks.core.resources import resources
    from tasks.core.sources import discover_files, read_bytes

    chunker = resources().chunker(config)
    texts, counts, files, ids = [], [], 0, []
    for file in discover_files([str(corpus)]):
        files += 1
        try:
            document = read_document(read_bytes(file), file.name, max_pages=config.max_pages)
        except FileRejected:
            continue
        for chunk in chunker.chunk_document(document):
            texts.append(chunk.text)
            counts.append(chunk.token_count)
            ids.append(chunk.token_ids)
    return texts, counts, files, ids


def wait_for_backlog(flow_run_id: str, timeout: float = 300) -> tuple[float, int]:
    """Seconds until every task run of the flow run reads back from the API in a final state,
    and how many task runs the flow run has."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    started = time.perf_counter()
    with get_client(sync_client=True) as client:
        while time.perf_counter() - started < timeout:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if runs and all(r.state and r.state.is_final() for r in runs):
                return time.perf_counter() - started, len(runs)
            time.sleep(0.2)
    return float("inf")


def seed_baseline(corpus: Path, config) -> tuple[float, int]:
    """Per file, one after another: read, chunk, encode, upsert. Returns (seconds, chunks)."""
    from tasks.core.errors import FileRejected
    from tasks.core.ids import point_id
    from tasks.core.readers import read_document
    from tasks.core.resources import resources
    from tasks.core.sources import discover_files, read_bytes
    from tasks.core.store import StoredPoint

    owner = resources()
    store, embedder, chunker = owner.store(config.store), owner.embedder(config.model), owner.chunker(config)
    store.ensure_collection(config.collection, embedder.dimension)
    started, chunks = time.perf_counter(), 0
    for file in discover_files([str(corpus)]):
        try:
            document = read_document(read_bytes(file), file.name, max_pages=config.max_pages)
        except FileRejected:
            continue
        pieces = chunker.chunk_document(document)
        vectors = embedder.model.encode([c.text for c in pieces], batch_size=32, normalize_embeddings=True)
        store.upsert_points(config.collection, [
            StoredPoint(id=point_id(file.uri, c.chunk_index), vector=v.tolist(),
                        payload={"source": file.uri, "chunk_index": c.chunk_index, "text": c.text})
            for c, v in zip(pieces, vectors)])
        chunks += len(pieces)
    return time.perf_counter() - started, chunks


def pipeline_child(files: int, precision: str) -> dict:
    """``run_pipeline_only`` in a fresh process; its JSON line."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "INGEST_EMBED_PRECISION": precision}
    env.pop("INGEST_QDRANT_PATH", None)
    run = subprocess.run([sys.executable, "-m", "bench.throughput", "--pipeline-only", "--files", str(files)],
                         env=env, capture_output=True, text=True, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-2000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def run_pipeline_only(files: int) -> None:
    """Only the flow, on the cached corpus of ``files``: seconds (with Prefect's and the model's
    start-up), peak RSS and Prefect's backlog, as one JSON line.

        python -m bench.throughput --pipeline-only --files 1000   (P3 and P4 at 1,000 files)
    """
    from bench.corpus import cached_corpus, isolated_run_environment

    isolated_run_environment("bench-pipeline-")
    from apps.prefect_api import prefect_api_ready
    from flows.ingest_flow import ingest_documents

    corpus = cached_corpus(files)
    started = time.perf_counter()
    prefect_api_ready()  # part of the start-up measured here
    summary = ingest_documents(sources=[str(corpus)], collection="pipeline")
    seconds, peak = time.perf_counter() - started, peak_rss_mb()
    backlog, task_runs = wait_for_backlog(summary.run_id)
    print(json.dumps({"files": files, "seconds": round(seconds, 2), "chunks": summary.totals.chunks_embedded,
                      "peak_rss_mb": round(peak, 1), "backlog_s": round(backlog, 2),
                      "task_runs": task_runs}))


class BatchLog:
    """Every model batch's seconds while ``recording``, by model call in the order the model
    thread ran them: the fp32 flow's batches, then the same calls replayed alone, compared batch
    by batch.

    It wraps three names of the embedding module for this process — ``Embedder.embed_timed``
    (a call's inputs), ``plan_batches`` (a call starting on the model thread) and ``heavy_step``
    (entered once per batch): a benchmark's instrument, not the product's.
    """

    def __init__(self) -> None:
        import contextlib

        from tasks.core import embedding

        self.recording = False
        self.batches: list[tuple[int, float]] = []  # (call number, seconds)
        self.inputs: dict[int, tuple] = {}  # id(token_counts) -> the call's arguments
        self.started: list[list[int]] = []  # each call's token counts, as the model thread ran it
        step, plan, embed_timed = embedding.heavy_step, embedding.plan_batches, embedding.Embedder.embed_timed
        log = self

        def recorded(embedder, texts, token_counts, **kwargs):
            if log.recording:
                log.inputs[id(token_counts)] = (embedder, texts, token_counts, kwargs)
            return embed_timed(embedder, texts, token_counts, **kwargs)

        def planned(token_counts, **kwargs):
            if log.recording:
                log.started.append(token_counts)
            return plan(token_counts, **kwargs)

        @contextlib.contextmanager
        def timed_step():
            started = time.perf_counter()
            with step():
                yield
            if log.recording:
                log.batches.append((len(log.started), time.perf_counter() - started))

        embedding.Embedder.embed_timed, embedding.plan_batches = recorded, planned
        embedding.heavy_step = timed_step

    def record(self) -> None:
        self.recording, self.batches, self.inputs, self.started = True, [], {}, []

    def compare(self) -> dict[str, float]:
        """Replay the recorded calls alone, in the order they ran; the flow's batches against
        theirs (empty if the two do not line up)."""
        flow, calls = self.batches, [self.inputs.get(id(counts)) for counts in self.started]
        self.batches, self.started = [], []
        for embedder, texts, token_counts, kwargs in filter(None, calls):
            embedder.embed_timed(texts, token_counts, **kwargs)
        alone, self.recording, self.inputs = self.batches, False, {}
        if not flow or None in calls or [f[0] for f in flow] != [a[0] for a in alone]:
            return {}
        extra = [(f[1] - a[1], i == 0 or flow[i - 1][0] != f[0])
                 for i, (f, a) in enumerate(zip(flow, alone))]
        total = sum(e for e, _ in extra) or float("nan")  # no extra time: no shares to give
        slowest = sorted((e for e, _ in extra), reverse=True)[:len(calls)]
        return {"flow_batches_vs_replay": sum(f[1] for f in flow) / sum(a[1] for a in alone),
                "batch_ratio_median": statistics.median(f[1] / a[1] for f, a in zip(flow, alone)),
                "extra_share_slowest_per_call": sum(slowest) / total,
                "extra_share_first_batches": sum(e for e, first in extra if first) / total,
                "calls": len(calls)}


def process_tree_cpu_s() -> tuple[float, float]:
    """CPU seconds used so far by this process, and by its child processes (the temporary
    Prefect server, the PDF parse workers): live ones read from ``/proc``, ended ones from
    ``RUSAGE_CHILDREN``, so that a difference of two readings counts every child's share."""
    import os

    tick, parents, used = os.sysconf("SC_CLK_TCK"), {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    me, mine = os.getpid(), set()
    for pid in parents:  # descendants: walk each process's parents up to this one
        chain, at = [], pid
        while at in parents and at not in mine and at != me:
            chain.append(at)
            at = parents[at]
        if at == me or at in mine:
            mine.update(chain)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), sum(used[p] for p in mine) + ended.ru_utime + ended.ru_stime


@contextlib.contextmanager
def embed_precision(precision: str) -> Iterator[None]:
    """``INGEST_EMBED_PRECISION`` for the flows run inside, as before afterwards (only that
    variable: the flow's settings are read from the environment when it starts)."""
    import os

    before = os.environ.get("INGEST_EMBED_PRECISION")
    os.environ["INGEST_EMBED_PRECISION"] = precision
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("INGEST_EMBED_PRECISION")
        else:
            os.environ["INGEST_EMBED_PRECISION"] = before


def stubbed_model_flow(ingest, source: str, collection: str) -> tuple[float, int, float, float]:
    """The flow with every model call answered at once (unit vectors): what the rest of the
    pipeline costs — reading, parsing, chunking, BM25 vectors, the store, Prefect's recording.
    Returns (seconds, chunks, CPU seconds in this process, CPU seconds of its child processes).
    On a machine whose every core the model keeps busy, that CPU is time the model loses."""
    import numpy as np

    from tasks.core import embedding

    def answered(embedder, texts, token_counts, **_kwargs):
        vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
        vectors[:, 0] = 1.0
        return vectors, 0.0

    # fp32: no runtime probe, since nothing here is the model's
    with mock.patch.object(embedding.Embedder, "embed_timed", answered), embed_precision("fp32"):
        (own, children), started = process_tree_cpu_s(), time.perf_counter()
        summary = ingest(sources=[source], collection=collection)
        seconds, (own_after, children_after) = time.perf_counter() - started, process_tree_cpu_s()
    return seconds, summary.totals.chunks_embedded, own_after - own, children_after - children


def median_spread(values: list[float]) -> tuple[float, float]:
    """The median and the spread (max - min) relative to it."""
    middle = statistics.median(values)
    return middle, (max(values) - min(values)) / middle if middle else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--folder", type=Path, help="use this folder instead of the generated corpus")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of every step, interleaved; medians and spreads are reported")
    parser.add_argument("--rss-files", type=int, default=1000,
                        help="peak RSS of the flow alone on N/10 and N files (0: skip)")
    parser.add_argument("--pipeline-only", action="store_true",
                        help="only the flow, in this process (peak RSS and backlog at --files)")
    args = parser.parse_args()
    if args.pipeline_only:
        return run_pipeline_only(args.files)

    from bench.corpus import cached_corpus, isolated_run_environment

    isolated_run_environment("bench-throughput-")
    import os

    import numpy as np

    from apps.prefect_api import connection
    from flows.ingest_flow import ingest_documents
    from tasks.core.resources import resources
    from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig

    corpus = args.folder or cached_corpus(args.files)
    settings = IngestSettings()
    connection().start(settings.prefect_start_timeout_s)  # Prefect's server starts meanwhile
    config = PipelineConfig.build(settings, IngestParams(sources=[str(corpus)], collection="seed"))
    texts, counts, files, token_ids = produce_chunks(corpus, config)
    tokens = sum(counts)
    owner = resources()
    embedder = owner.embedder(config.model)
    # Autocast rows only where they can say something: on a CPU without native bf16, torch
    # emulates bf16 (~0.2x fp32: an hour of a 300-file bench).
    from tasks.core.precision import skip_reason

    autocast_skip = skip_reason("bf16", embedder.model)
    autocast = None if autocast_skip else owner.embedder(config.model, "bf16")
    # What the default, INGEST_EMBED_PRECISION=auto, runs here (the flow's prepare asks the same
    # owner): bf16 on OpenVINO on a CPU with native bf16, fp32 on OpenVINO on others.
    fast_choice = owner.runtime_choice(config.model, "auto")
    fast = None if fast_choice.runtime == "fp32" else owner.embedder(config.model, fast_choice.runtime)
    if autocast_skip:
        print(f"skipped: the rows of bf16 torch autocast: {autocast_skip}")
    if not fast:
        print(f"skipped: the rows of the default runtime, fp32 here ({fast_choice.why})")
    connection().wait_ready()
    vectors: dict[str, np.ndarray] = {}
    backlogs: list[float] = []
    batch_log, replays = BatchLog(), []

    def encode_limit(model, key: str, ids: list | None = None):
        def measure(_round: int) -> tuple[float, int]:
            started = time.perf_counter()
            vectors[key] = model.embed(texts, counts, batch_size=config.embed_batch_size, token_ids=ids)
            return time.perf_counter() - started, len(texts)
        return measure

    def encode_plain(_round: int) -> tuple[float, int]:
        started = time.perf_counter()
        embedder.model.encode(texts, batch_size=config.embed_batch_size, normalize_embeddings=True)
        return time.perf_counter() - started, len(texts)

    def pipeline(precision: str):
        def measure(round_: int) -> tuple[float, int]:
            with embed_precision(precision):
                if round_ == 0:  # the first run in a process pays Prefect's and the model's start-up
                    ingest_documents(sources=[str(next(corpus.rglob("*.txt")))],
                                     collection=f"warmup-{precision}")
                if precision == "fp32":
                    batch_log.record()
                started = time.perf_counter()
                summary = ingest_documents(sources=[str(corpus)], collection=f"pipeline-{precision}-{round_}")
                seconds = time.perf_counter() - started
            if precision == "fp32":
                backlogs.append(wait_for_backlog(summary.run_id)[0])
                replays.append(batch_log.compare())
            return seconds, summary.totals.chunks_embedded
        return measure

    def seed(_round: int) -> tuple[float, int]:
        return seed_baseline(corpus, config)

    bm25 = owner.bm25()

    def sparse(_round: int) -> tuple[float, int]:
        started = time.perf_counter()
        bm25.documents(texts)
        return time.perf_counter() - started, len(texts)

    limit, autocast_limit = "limit (sorted by tokens)", "limit, bf16 torch autocast"
    # The limit above tokenises the texts, as model.encode does; the pipeline gives the model the
    # ids its chunker made. This row is the limit without that work: the model's alone.
    ids_limit = "limit, from the chunker's token ids"
    # The default's runtime gets its own limit row unless it is autocast itself.
    fast_label = fast.label if fast else ""
    fast_limit = autocast_limit if fast is autocast else f"limit, default runtime ({fast_label})"
    fast_key = "bf16" if fast is autocast else "fast"
    flow_fp32 = "pipeline (flow, end to end)"
    flow_fast = f"pipeline, default (auto: {fast_label})"
    steps = {
        limit: encode_limit(embedder, "fp32"),
        ids_limit: encode_limit(embedder, "fp32-ids", token_ids),
        "plain model.encode": encode_plain,
        **({autocast_limit: encode_limit(autocast, "bf16")} if autocast else {}),
        **({fast_limit: encode_limit(fast, fast_key)} if fast else {}),
        flow_fp32: pipeline("fp32"),
        **({flow_fast: pipeline("auto")} if fast else {}),
        "seed-style baseline": seed,
        "BM25 vectors of the same chunks (hybrid's sparse side)": sparse,
    }
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in steps}
    stubbed: list[tuple[float, int, float, float]] = []  # each round's flow without the model
    rss: dict[str, float] = {}
    for round_ in range(args.repeat):
        for name, step in steps.items():
            runs[name].append(step(round_))
            rss[name] = peak_rss_mb()
            print(f"round {round_ + 1}/{args.repeat}: {name}: {runs[name][-1][0]:.1f} s", flush=True)
        stubbed.append(stubbed_model_flow(ingest_documents, str(corpus), f"stubbed-{round_}"))
        print(f"round {round_ + 1}/{args.repeat}: the flow with its model calls answered at once: "
              f"{stubbed[-1][0]:.1f} s, {stubbed[-1][2] + stubbed[-1][3]:.1f} CPU s", flush=True)
    # P4 (and P3 at that size): the flow alone on RSS_FILES/10 and RSS_FILES generated files, each
    # in a fresh process. 1,000 by default: 30 files (two groups) never reach the steady state of
    # three threads with a group each, so a 30-vs-300 ratio measures the ramp, not the growth.
    children = None
    if args.rss_files >= 20:
        children = (pipeline_child(args.rss_files // 10, "fp32"), pipeline_child(args.rss_files, "fp32"))

    def rate(name: str, round_: int) -> float:
        seconds, chunks = runs[name][round_]
        return chunks / seconds

    def paired(numerator: str, denominator: str) -> tuple[float, float]:
        """Per-round ratio of two steps' chunks/s (run side by side), as median and spread."""
        return median_spread([rate(numerator, r) / rate(denominator, r) for r in range(args.repeat)])

    print(f"{files} files, {len(texts)} chunks, {tokens} tokens ({tokens / len(texts):.0f} per chunk); "
          f"medians of {args.repeat} interleaved round(s)")
    print(f"{'step':<52}{'wall s':>8}{'spread':>8}{'chunks/s':>10}{'tokens/s':>10}{'vs limit':>10}"
          f"{'peak RSS MB':>13}")
    for name in steps:
        seconds, spread = median_spread([r[0] for r in runs[name]])
        cps = runs[name][0][1] / seconds
        print(f"{name:<52}{seconds:>8.1f}{spread:>8.0%}{cps:>10.1f}{cps * tokens / len(texts):>10.0f}"
              f"{paired(name, limit)[0]:>10.2f}{rss[name]:>13.0f}")
    replayed = {key: statistics.median(r[key] for r in replays if r)
                for key in ("flow_batches_vs_replay", "batch_ratio_median", "extra_share_slowest_per_call",
                            "extra_share_first_batches")} if any(replays) else {}
    if replayed:
        print(f"the fp32 flow's model batches, replayed alone after it (medians of rounds): in the flow "
              f"{replayed['flow_batches_vs_replay']:.3f}x their time alone, per batch median "
              f"{replayed['batch_ratio_median']:.3f}x; of the extra time, "
              f"{replayed['extra_share_slowest_per_call']:.0%} in the slowest batches, one per model call "
              f"({next(r for r in replays if r)['calls']} calls), "
              f"{replayed['extra_share_first_batches']:.0%} in each call's first batch")
    # The rest of the work takes its CPU from the model's cores (the model keeps them all busy
    # and scales with them: 1.90x from one thread to two on the generated corpus), so even with
    # none of it lost to contention the pipeline takes at least the limit from the chunker's ids
    # plus that CPU over the cores: the highest pipeline_vs_raw this machine allows.
    cores = len(os.sched_getaffinity(0))
    rest_cpu = [run[2] + run[3] for run in stubbed]
    ceiling = median_spread([runs[limit][r][0] / (runs[ids_limit][r][0] + rest_cpu[r] / cores)
                             for r in range(args.repeat)])
    own_cpu, child_cpu, stub_s = (statistics.median(run[i] for run in stubbed) for i in (2, 3, 0))
    print(f"the rest of the work (the flow with its model calls answered at once; medians): "
          f"{statistics.median(rest_cpu):.1f} CPU s ({own_cpu:.1f} in this process, {child_cpu:.1f} in "
          f"Prefect's server and the parse workers), {stub_s:.1f} s; on {cores} cores the fp32 "
          f"pipeline can reach at most {ceiling[0]:.3f}x the limit (pipeline_ceiling_vs_raw)")
    cosines = (vectors["fp32"] * vectors[fast_key]).sum(axis=1) if fast else None
    backlog_s = statistics.median(backlogs)
    print(f"Prefect backlog after the flow returned: {backlog_s:.2f} s (median; max {max(backlogs):.2f} s)")
    if fast:
        print(f"{fast.label} vs fp32 vectors of the same chunks: cosine mean {cosines.mean():.6f}, "
              f"min {cosines.min():.6f}")
    if children:
        print(f"flow alone in a fresh process: {children[0]['files']} files peak RSS "
              f"{children[0]['peak_rss_mb']:.0f} MB; {children[1]['files']} files peak RSS "
              f"{children[1]['peak_rss_mb']:.0f} MB, {children[1]['seconds']:.0f} s, "
              f"{children[1]['task_runs']} task runs, Prefect backlog {children[1]['backlog_s']:.2f} s")
    ratios = {"pipeline_vs_raw": paired(flow_fp32, limit), "pipeline_ceiling_vs_raw": ceiling,
              "pipeline_vs_ids_limit": paired(flow_fp32, ids_limit),
              "vs_seed": paired(flow_fp32, "seed-style baseline"),
              **({"fast_vs_fp32_pipeline": paired(flow_fast, flow_fp32),
                  "fast_vs_fp32_limit": paired(fast_limit, limit)} if fast else {}),
              "plain_vs_limit": paired("plain model.encode", limit),
              # seconds of the BM25 vectors / seconds of the fp32 pipeline, same chunks: what the
              # sparse side adds to a run (the pipeline includes it; without it: 1 / (1 - share))
              "bm25_share_of_pipeline": paired(flow_fp32, "BM25 vectors of the same chunks (hybrid's sparse side)")}
    print("paired ratios (median, spread over rounds): " + ", ".join(
        f"{key} {value:.5f} ±{spread / 2:.1%}" if key.startswith("bm25") else
        f"{key} {value:.3f} ±{spread / 2:.1%}" for key, (value, spread) in ratios.items()))
    print(json.dumps({
        "files": files, "chunks": len(texts), "tokens": tokens, "rounds": args.repeat,
        "limit_chunks_per_s": round(len(texts) / statistics.median(r[0] for r in runs[limit]), 2),
        **{key: round(value, 5 if key.startswith("bm25") else 3) for key, (value, _) in ratios.items()},
        "backlog_s": round(backlog_s, 2),
        "non_model_cpu_s": round(statistics.median(rest_cpu), 2),
        "backlog_s_at_rss_files": children[1]["backlog_s"] if children else None,
        "task_runs_at_rss_files": children[1]["task_runs"] if children else None,
        # The default's runtime; where it is fp32 on torch: nulls, and why.
        "fast_precision": fast.label if fast else None,
        "fast_skipped": None if fast else fast_choice.why,
        **({} if fast else {"fast_vs_fp32_pipeline": None, "fast_vs_fp32_limit": None}),
        "fast_cosine_mean": round(float(cosines.mean()), 6) if fast else None,
        "fast_cosine_min": round(float(cosines.min()), 6) if fast else None,
        "rss_ratio_10x": (round(children[1]["peak_rss_mb"] / children[0]["peak_rss_mb"], 3)
                          if children else None),
        **{key: round(value, 3) for key, value in replayed.items()},
    }))


if __name__ == "__main__":
    main()
