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
    assert schema["required"] == ["sources"]
    fields = schema["properties"]
    assert list(fields) == ["sources", "include", "collection", "chunk_tokens", "chunk_overlap",
                            "overwrite", "prune", "prune_max_fraction", "force_prune", "names"]
    # Flat, typed fields with their real defaults and bounds: no nullable "default: setting".
    assert fields["chunk_tokens"] == {
        "default": 192, "maximum": 8192, "minimum": 16, "position": 3, "type": "integer",
        "title": "Chunk size (tokens)",
        "description": "Tokens per chunk, counted by the model's tokenizer; must fit the model's input"}
    assert fields["collection"]["default"] == "documents" and fields["collection"]["type"] == "string"
    assert fields["prune_max_fraction"]["maximum"] == 1.0
    assert all(field.get("description") and field.get("title") for field in fields.values())
    assert not any("anyOf" in field for field in fields.values())
    # The deployment carries the environment's collection and chunking as its parameters.
    assert manual.parameters == {"collection": "documents", "chunk_tokens": 192, "chunk_overlap": 32}


def test_prefect_yaml_entrypoints_load():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{name}")
        assert flow.name == "ingest-documents"


def test_prefect_yaml_is_the_rendering_of_the_one_declaration():
    """prefect.yaml and the served deployments come from deployments/definitions.py alone."""
    from deployments.definitions import render_prefect_yaml

    assert (ROOT / "prefect.yaml").read_text() == render_prefect_yaml(), \
        "prefect.yaml is stale: python -m deployments.definitions > prefect.yaml"
    spec = yaml.safe_load(render_prefect_yaml())
    names = [d["name"] for d in spec["deployments"]]
    assert names == ["manual", "scheduled", "on-new-objects"]
    scheduled = spec["deployments"][1]
    # The schedule carries every parameter (a scheduled run never lacks one), the same as served.
    assert scheduled["schedules"][0]["parameters"] == scheduled["parameters"]
    assert scheduled["parameters"]["sources"] == ["{{ $INGEST_SCHEDULE_SOURCE }}"]
    assert {"collection", "prune", "chunk_tokens"} <= set(scheduled["parameters"])


def test_served_and_rendered_deployments_agree(monkeypatch):
    from deployments.definitions import DeploymentSettings, build_deployments, render_prefect_yaml

    monkeypatch.setenv("INGEST_SCHEDULE_SOURCES", "s3://b/docs/")
    monkeypatch.setenv("INGEST_WATCH_URL", "s3://b/docs/")
    monkeypatch.setenv("INGEST_DEPLOY_COLLECTION", "papers")
    settings = DeploymentSettings()
    served = {d.name: d for d in build_deployments(settings)}
    rendered = {d["name"]: d for d in yaml.safe_load(render_prefect_yaml(settings))["deployments"]}
    assert set(served) == set(rendered) == {"manual", "scheduled", "on-new-objects"}
    for name, deployment in served.items():
        assert deployment.parameters == rendered[name]["parameters"]
        assert deployment.description == rendered[name]["description"]
        assert deployment.concurrency_limit == rendered[name]["concurrency_limit"]
    assert served["scheduled"].parameters["collection"] == "papers"
    [trigger] = served["on-new-objects"].triggers
    assert trigger.parameters == rendered["on-new-objects"]["triggers"][0]["parameters"]
