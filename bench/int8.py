"""The int8 trial: NNCF post-training quantization of the OpenVINO transformer (weights and
activations), calibrated on real chunks, against the bf16-OpenVINO runtime ``auto`` picks.

    make bench-int8                          (installs nncf into the venv first)
    python -m bench.int8 --keep-ffn-out 0,1  (layers whose FFN output projection stays bf16)
    python -m bench.int8 --eval              (then ``bench.eval`` with the int8 model in place)

Chunks are the pipeline's own, from the same bulk documents as ``bench.peers``; ``--calibrate``
of them (random, fixed seed) calibrate, ``--test`` others measure: seconds to embed them (best of
``--rounds``, bf16 and int8 interleaved) and each vector's cosine to fp32 (mean, minimum, 1st
percentile) — the numbers ``precision.passes_gate`` would judge. int8 is not a runtime of the
product: it is offered only if it is >= 1.3x bf16 with ``make eval`` unchanged (issue #18).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def quantize(owner, model_name: str, texts: list[str], keep_ffn_out: list[int]):
    """The model's transformer converted to OpenVINO and quantized to int8 by NNCF."""
    import nncf
    import openvino as ov
    import torch

    from tasks.core.openvino_runtime import _last_hidden_state_module

    model = owner.model(model_name).model
    names = owner.embedder(model_name, "bf16-openvino").compiled.input_names
    example = model.preprocess(["an example sentence", "and a second, longer example sentence"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = ov.convert_model(_last_hidden_state_module(model[0].model).eval(),
                                     example_input={n: example[n] for n in names})

    def features(batch: list[str]) -> dict:
        found = model.preprocess(batch)
        return {n: found[n].numpy() for n in names}

    calibration = [features(texts[i:i + 8]) for i in range(0, len(texts), 8)]
    ignored = nncf.IgnoredScope(patterns=[rf".*layer\.{n}\.output\.dense.*" for n in keep_ffn_out],
                                validate=False)
    return nncf.quantize(converted, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=len(calibration), ignored_scope=ignored)


def swap_in(embedder, xml: str):
    """``embedder`` (bf16-openvino) with its compiled transformer replaced by the model at ``xml``."""
    import openvino as ov

    core = ov.Core()
    embedder.compiled.compiled = core.compile_model(core.read_model(xml), "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": embedder.loaded.threads})
    return embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="documents (default: the eval set's bulk batch)")
    parser.add_argument("--calibrate", type=int, default=300, help="calibration chunks")
    parser.add_argument("--test", type=int, default=900, help="measured chunks (not calibration)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep-ffn-out", default="", help="layers (0-5) kept bf16, e.g. 0,1")
    parser.add_argument("--eval", action="store_true", help="then run bench.eval with int8 in place")
    args = parser.parse_args()
    import tasks.core.openvino_runtime  # noqa: F401  first: OpenVINO without telemetry (see there)

    try:
        import nncf  # noqa: F401
    except ImportError:
        raise SystemExit("the int8 trial needs NNCF: make bench-int8 (pip install nncf)") from None

    from bench.peers import DEFAULT_FOLDER, pick
    from bench.throughput import produce_chunks
    from tasks.core.resources import resources
    from tasks.core.settings import IngestSettings, PipelineConfig

    config = PipelineConfig.build(IngestSettings())
    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    folder = args.folder
    if folder is None:
        from bench.peers import stage

        folder = stage(pick(DEFAULT_FOLDER, 11, 5)[0], work / "bulk")
    texts, counts, _, _ = produce_chunks(folder, config)
    rng = np.random.default_rng(0)
    chosen = set(rng.choice(len(texts), args.calibrate, replace=False).tolist())
    rest = [i for i in range(len(texts)) if i not in chosen]
    measured = rest[::max(1, len(rest) // args.test)][:args.test]
    keep = [int(n) for n in args.keep_ffn_out.split(",") if n.strip()]

    owner = resources()
    started = time.perf_counter()
    quantized = quantize(owner, config.model, [texts[i] for i in sorted(chosen)], keep)
    quantize_s = time.perf_counter() - started
    import openvino as ov

    xml = work / "int8.xml"
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    from tasks.core.embedding import make_embedder

    loaded = owner.model(config.model)
    fp32 = owner.embedder(config.model, "fp32")
    bf16 = owner.embedder(config.model, "bf16-openvino")
    int8 = swap_in(make_embedder(config.model, loaded, "bf16-openvino"), str(xml))
    sample, tokens = [texts[i] for i in measured], [counts[i] for i in measured]
    reference = fp32.embed(sample, tokens, batch_size=config.embed_batch_size)
    seconds: dict[str, list[float]] = {"bf16-openvino": [], "int8": []}
    cosines = {}
    for _ in range(args.rounds):
        for name, embedder in (("bf16-openvino", bf16), ("int8", int8)):
            started = time.perf_counter()
            vectors = embedder.embed(sample, tokens, batch_size=config.embed_batch_size)
            seconds[name].append(time.perf_counter() - started)
            cosines[name] = (reference * vectors).sum(axis=1)
    report = {"chunks": len(texts), "calibration": len(chosen), "measured": len(measured),
              "keep_ffn_out": keep, "quantize_s": round(quantize_s, 1),
              "int8_vs_bf16": round(min(seconds["bf16-openvino"]) / min(seconds["int8"]), 2)}
    for name, cos in cosines.items():
        report[name] = {"best_s": round(min(seconds[name]), 2), "cosine_mean": round(float(cos.mean()), 6),
                        "cosine_min": round(float(cos.min()), 6),
                        "cosine_p1": round(float(np.percentile(cos, 1)), 6)}
        print(f"{name:14} {min(seconds[name]):6.2f} s  cosine to fp32 mean {cos.mean():.6f} "
              f"min {cos.min():.6f} p1 {np.percentile(cos, 1):.6f}")
    print(f"int8 vs bf16-openvino: {report['int8_vs_bf16']:.2f}x (quantized in {quantize_s:.0f} s "
          f"on {len(chosen)} chunks; FFN output kept bf16 in layers {keep or 'none'})")
    print(json.dumps(report))
    if args.eval:
        # The eval's run and searches use this process's bf16-openvino embedder: now int8.
        swap_in(bf16, str(xml))
        os.environ["INGEST_EMBED_PRECISION"] = "bf16"
        import sys

        from bench import eval as evaluation

        sys.argv = [sys.argv[0]]
        evaluation.main()


if __name__ == "__main__":
    main()
