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
     {"pipeline_vs_raw", "vs_seed", "backlog_s", "plain_vs_limit", "fast_vs_fp32_pipeline", "rss_ratio_10x",
      "backlog_s_at_rss_files", "bf16_cosine_min", "bm25_share_of_pipeline"}),
    (["bench.store", "--points", "300"], {"edge_open_s", "local_open_s", "edge_search_median_ms"}),
    (["bench.eval", "--smoke"], {"dense", "sparse", "hybrid", "questions", "by_language"}),
])
def test_harness_prints_its_table_and_a_json_last_line(cli_env, args, keys):
    run = subprocess.run([sys.executable, "-m", *args], env=cli_env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert keys <= set(report)
