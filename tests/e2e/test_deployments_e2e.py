"""The three ways the product runs, against a real Prefect server: events from the bucket
watcher (latency, bursts, duplicates), runs started the way the UI does, and the schedule."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.once]

TOPICS = {
    "lakes": "Glacial lakes look turquoise because rock flour, ground by glaciers, scatters "
             "sunlight in the water. The finer the flour, the milkier and brighter the colour.",
    "heat": "A heat pump moves warmth from outside air into the house; its coefficient of "
            "performance falls as the outdoor temperature drops in deep winter.",
    "bread": "Sourdough rises through wild yeast and lactic acid bacteria; a ripe starter "
             "doubles within eight hours at room temperature and smells pleasantly sour.",
}


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _s3():
    import boto3

    return boto3.client("s3", region_name="us-east-1")


def _deployment(name: str):
    """The deployment, or None while it is not registered yet."""
    from prefect.exceptions import ObjectNotFound

    with _client() as client:
        try:
            return client.read_deployment_by_name(f"ingest-documents/{name}")
        except ObjectNotFound:
            return None


def _runs(deployment_id) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with _client() as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def _outcomes(flow_run_id) -> dict[str, str]:
    """source → status, from the run's summary table artifact."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
    )

    with _client() as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["table"])))
    rows = [row for a in artifacts for row in (json.loads(a.data) if isinstance(a.data, str) else a.data)]
    return {row["source"]: row["status"] for row in rows}


class Store:
    """Reads the served runs' embedded store between runs (taking the same run lock)."""

    def __init__(self, path: Path) -> None:
        from tasks.core.settings import StoreLocation

        self.location = StoreLocation.embedded("edge", path)

    def _with_store(self, action):
        from tasks.core.store import exclusive_run
        from tests.conftest import close_stores, get_store

        if not Path(self.location.path).exists():
            return None
        with exclusive_run(self.location, wait_s=300):
            try:
                return action(get_store(self.location))
            finally:
                close_stores()

    def indexed(self, uris: list[str]) -> bool:
        heads = self._with_store(lambda s: s.file_heads("docs", uris) if s.count("docs") else {})
        return bool(heads) and all(uri in heads and heads[uri].complete for uri in uris)

    def count(self) -> int:
        return self._with_store(lambda s: s.count("docs")) or 0

    def top_source(self, query: str) -> str:
        from tasks.core.resources import resources
        from tasks.core.search import search
        from tasks.core.settings import IngestSettings, PipelineConfig

        config = PipelineConfig.build(IngestSettings(qdrant_path=Path(self.location.path).parent,
                                                     collection="docs"))
        return self._with_store(lambda s: search(query, config, resources(), limit=1)[0].source)


def test_new_objects_become_searchable_in_batches_without_duplicates(stack: Stack):
    s3, store = _s3(), Store(stack.store)
    wait_until(lambda: _deployment("on-new-objects"), timeout=120, what="served deployments",
               interval=1)
    deployment = _deployment("on-new-objects")
    time.sleep(2)  # the trigger service picks up the new automation

    started = time.monotonic()
    uris = []
    for name, text in TOPICS.items():
        s3.put_object(Bucket=stack.bucket, Key=f"inbox/{name}.txt", Body=text.encode())
        uris.append(f"s3://{stack.bucket}/inbox/{name}.txt")
    wait_until(lambda: store.indexed(uris), timeout=180, what="first uploads to be indexed")
    latency = time.monotonic() - started
    print(f"\nupload → searchable: {latency:.1f}s for 3 objects")
    assert store.top_source("why is the lake water turquoise?") == uris[0]
    first_runs = len(_runs(deployment.id))
    assert 1 <= first_runs <= 2

    # A burst: 120 objects at once become a bounded number of runs, not 120.
    burst = [f"inbox/burst/note-{n:03d}.txt" for n in range(120)]
    started = time.monotonic()
    for n, key in enumerate(burst):
        s3.put_object(Bucket=stack.bucket, Key=key,
                      Body=f"Field note {n}: the marmot colony {n} woke at dawn near cairn {n}.".encode())
    burst_uris = [f"s3://{stack.bucket}/{key}" for key in burst]
    wait_until(lambda: store.indexed(burst_uris), timeout=300, what="the burst to be indexed", interval=2)
    burst_runs = len(_runs(deployment.id)) - first_runs
    print(f"burst of {len(burst)}: {burst_runs} flow runs, searchable after {time.monotonic() - started:.1f}s")
    assert 1 <= burst_runs <= 3

    # Duplicates: the same bytes uploaded again are not announced again, and a re-announced
    # batch (a watcher restarted before recording it) leaves the collection as it was.
    points = store.count()
    s3.put_object(Bucket=stack.bucket, Key="inbox/lakes.txt", Body=TOPICS["lakes"].encode())
    from apps.events import EventSender
    from tasks.core.watch import NewObject

    before = {r.id for r in _runs(deployment.id)}
    sender = EventSender(watched=f"s3://{stack.bucket}/inbox/")
    sender([NewObject(stack.bucket, f"inbox/{name}.txt") for name in TOPICS])
    sender.close()

    def rerun_done():
        new = [r for r in _runs(deployment.id) if r.id not in before]
        return [r for r in new if r.state and r.state.is_final()] if new else None

    [rerun] = wait_until(rerun_done, timeout=120, what="the re-announced batch's run")
    assert rerun.state.is_completed(), rerun.state
    assert set(_outcomes(rerun.id).values()) == {"unchanged"}
    time.sleep(3)  # the re-upload of identical bytes must not have started another run
    assert {r.id for r in _runs(deployment.id)} - before == {rerun.id}
    assert store.count() == points


def test_runs_started_like_the_ui_are_validated_by_the_server(stack: Stack):
    from prefect.deployments import run_deployment
    from prefect.exceptions import PrefectHTTPStatusError

    s3 = _s3()
    s3.put_object(Bucket=stack.bucket, Key="ui/heat.txt", Body=TOPICS["heat"].encode())
    deployment = wait_until(lambda: _deployment("manual"), timeout=120, what="manual deployment")
    schema = deployment.parameter_openapi_schema
    assert schema["required"] == ["sources"]
    assert schema["properties"]["chunk_tokens"]["minimum"] == 16
    assert schema["properties"]["chunk_tokens"]["title"] == "Chunk size (tokens)"
    assert deployment.parameters["collection"] == "docs"  # INGEST_DEPLOY_COLLECTION, in the form

    run = run_deployment("ingest-documents/manual", timeout=240, parameters={
        "sources": [f"s3://{stack.bucket}/ui/"], "collection": "docs", "chunk_tokens": 128})
    assert run.state.is_completed(), run.state
    assert _outcomes(run.id) == {f"s3://{stack.bucket}/ui/heat.txt": "indexed"}

    with _client() as client:
        for bad, field in (({"sources": ["x"], "chunk_tokens": 5}, "chunk_tokens"),
                           ({"collection": "docs"}, "sources"),
                           ({"sources": ["x"], "collection": "bad name!"}, "collection")):
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(deployment.id, parameters=bad)
            assert refused.value.response.status_code == 409
            assert field in refused.value.response.text

    # A combination no single field's bounds catch fails the run at once, in one line.
    bad = run_deployment("ingest-documents/manual", timeout=240, parameters={
        "sources": [f"s3://{stack.bucket}/ui/"], "chunk_tokens": 100, "chunk_overlap": 80})
    assert bad.state.is_failed()
    assert "must be at most half of chunk_tokens (100)" in bad.state.message
    assert "\n" not in bad.state.message and "Traceback" not in bad.state.message


def test_scheduled_deployment_carries_every_parameter(stack: Stack):
    from prefect.deployments import run_deployment

    deployment = wait_until(lambda: _deployment("scheduled"), timeout=120, what="scheduled deployment")
    [schedule] = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "Europe/Zurich")
    assert schedule.parameters["sources"] == [f"s3://{stack.bucket}/inbox/"]
    assert schedule.parameters["collection"] == "docs"
    # A run with nothing but what the deployment carries, as the scheduler creates it.
    run = run_deployment("ingest-documents/scheduled", timeout=240)
    assert run.state.is_completed(), run.state
    statuses = set(_outcomes(run.id).values())
    assert statuses <= {"unchanged", "indexed"} and "unchanged" in statuses
