"""Hybrid search end to end (real model, both embedded backends): a keyword question the
embedding model cannot answer — a part code among near-identical sheets — is missed by dense
search and found by hybrid search, which is the default of the Python call, ``GET /search``
and ``ingest search``."""

from __future__ import annotations

import pytest

from flows.ingest_flow import ingest_documents
from tasks.core.errors import ConfigError
from tasks.core.resources import resources
from tasks.core.search import search
from tasks.core.settings import IngestParams, IngestSettings, PipelineConfig

pytestmark = [pytest.mark.flow, pytest.mark.store]

# Five maintenance sheets that differ in their part code: to the embedding model they are
# one text; only the code tells them apart.
SHEETS = {
    "valve-3318.txt": "Maintenance sheet for valve assembly VX-3318. Check the actuator housing "
                      "for cracks and tighten the mounting bolts. Gaskets are inspected at each "
                      "yearly shutdown.",
    "valve-3381.txt": "Maintenance sheet for valve assembly VX-3381. How often are the seals "
                      "replaced? The seals of this valve are replaced every six months, and worn "
                      "seals are returned to the supplier.",
    "valve-8133.txt": "Maintenance sheet for valve assembly VX-8133. Seal replacement interval: "
                      "the seals are replaced every three months because of the abrasive slurry.",
    "valve-1833.txt": "Maintenance sheet for valve assembly VX-1833. Replace the seals every "
                      "twelve months; seal kits are kept in the store room.",
    "valve-3813.txt": "Maintenance sheet for valve assembly VX-3813. The seals need replacing "
                      "every two years under normal operating pressure.",
}
QUESTION = "VX-3318 seals"


@pytest.fixture
def sheets(ingest_env, tmp_path):
    folder = tmp_path / "sheets"
    folder.mkdir()
    for name, text in SHEETS.items():
        (folder / name).write_text(text + "\n")
    summary = ingest_documents(sources=[str(folder)], collection="sheets")
    assert summary.totals.indexed == 5
    return PipelineConfig.build(IngestSettings(), IngestParams(sources=["."], collection="sheets"))


def test_a_keyword_question_dense_misses_and_hybrid_finds(sheets):
    def ranked(mode):
        return [h.file_name for h in search(QUESTION, sheets, resources(), limit=5, mode=mode)]

    dense = ranked("dense")
    assert dense[0] != "valve-3318.txt" and dense.index("valve-3318.txt") >= 2
    assert ranked("sparse")[0] == "valve-3318.txt"
    assert ranked("hybrid")[0] == "valve-3318.txt"
    # hybrid is the default
    [hit] = search(QUESTION, sheets, resources(), limit=1)
    assert hit.file_name == "valve-3318.txt" and "VX-3318" in hit.text
    with pytest.raises(ConfigError, match="unknown search mode"):
        search(QUESTION, sheets, resources(), mode="fuzzy")
