"""The benchmark harnesses keep working: tiny inputs, shape of the output, no timing claims."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.flow, pytest.mark.once]


@pytest.mark.parametrize("args,keys", [
    # --rss-files 0: the fresh-process runs (P3/P4) are the same flow, and cost ~30 s of start-up.
    (["bench.throughput", "--files", "4", "--repeat", "1", "--rss-files", "0"],
     {"pipeline_vs_raw", "pipeline_vs_ids_limit", "vs_seed", "backlog_s", "plain_vs_limit", "fast_vs_fp32_pipeline", "rss_ratio_10x",
      "backlog_s_at_rss_files", "fast_cosine_min", "bm25_share_of_pipeline",
      # the fp32 flow's model batches replayed alone, batch by batch
      "flow_batches_vs_replay", "extra_share_slowest_per_call", "extra_share_first_batches",
      # the flow with its model calls answered at once: the rest's CPU, and the ceiling it sets
      "non_model_cpu_s", "pipeline_ceiling_vs_raw"}),
    (["bench.store", "--points", "300"], {"edge_open_s", "local_open_s", "edge_search_median_ms"}),
    # one round of cold `ingest search` processes (through bench.peers' timed child) and GET /search
    (["bench.search", "--chunks", "300", "--rounds", "1", "--cold", "1"],
     {"hybrid", "dense", "sparse", "cold_first_vs_kept", "cold_sparse_s"}),
    # the OCR bench's batch without scans, auto against off (its accuracy part takes minutes)
    (["bench.ocr", "--no-accuracy", "--files", "4", "--rounds", "1"], {"engine", "throughput"}),
])
def test_harness_prints_its_table_and_a_json_last_line(cli_env, args, keys):
    assert keys <= set(_run_harness(cli_env, args))


def test_eval_and_its_variants_on_the_smoke_set(cli_env, tmp_path):
    """``bench.eval`` builds its collection in a kept store; ``bench.eval_variants`` reads it
    back and reproduces the product's hybrid search in memory (its first row)."""
    store = str(tmp_path / "eval-store")
    report = _run_harness(cli_env, ["bench.eval", "--smoke", "--store-path", store])
    assert {"dense", "sparse", "hybrid", "questions", "by_language"} <= set(report)
    variants = _run_harness(cli_env, ["bench.eval_variants", "--smoke", "--titles", "--store-path", store])
    from bench.eval_variants import PRODUCT_ROW

    product = variants[PRODUCT_ROW]
    assert {"title embedded", "by file: +0.1 x same-file scores in top 10"} <= set(variants)
    for metric in ("recall@1", "recall@5", "recall@10", "file+page@5", "mrr"):
        assert product[metric] == report["hybrid"][metric], metric


def _run_harness(env: dict, args: list[str]) -> dict:
    """Run ``python -m <args>``; its JSON last line."""
    run = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
