"""Deployment definitions load and expose the typed run form (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.flow


def test_served_deployment_has_the_typed_parameter_form():
    from deployments.serve import build_deployments

    [manual] = build_deployments()
    schema = manual._parameter_openapi_schema.model_dump()
    assert schema["required"] == ["params"]
    fields = schema["definitions"]["IngestParams"]["properties"]
    assert {"sources", "include", "collection", "chunk_tokens", "chunk_overlap", "overwrite"} <= set(fields)
    assert fields["chunk_tokens"]["anyOf"][0]["minimum"] == 16
    assert all(field.get("description") for field in fields.values())


def test_prefect_yaml_entrypoints_load():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{name}")
        assert flow.name == "ingest-documents"
