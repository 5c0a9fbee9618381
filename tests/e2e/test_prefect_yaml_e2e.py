"""`prefect deploy --all` from prefect.yaml onto a process work pool, and a worker running a
scheduled deployment's run with nothing but the parameters the deployment carries."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.conftest import BIN, ROOT, Processes, base_env, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.once]


def test_prefect_yaml_deploys_three_deployments_a_worker_runs(prefect_api, moto_endpoint, tmp_path):
    import uuid

    import boto3
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    bucket = f"yaml-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="docs/lakes.txt", Body=b"Glacial lakes are turquoise from rock flour.")
    env = {**base_env(tmp_path, prefect_api, tmp_path / "store"),
           "INGEST_SCHEDULE_SOURCE": f"s3://{bucket}/docs/", "INGEST_WATCH_URL": f"s3://{bucket}/docs/"}

    def cli(*args: str) -> str:
        done = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    cli("work-pool", "create", "ingest-process", "--type", "process")
    cli("deploy", "--all")

    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
        assert set(deployments) == {"manual", "scheduled", "on-new-objects"}
        assert {d.work_pool_name for d in deployments.values()} == {"ingest-process"}
        [schedule] = deployments["scheduled"].schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
        assert schedule.parameters["sources"] == [f"s3://{bucket}/docs/"]
        assert schedule.parameters == deployments["scheduled"].parameters  # it carries them all
        assert deployments["manual"].parameter_openapi_schema["required"] == ["sources"]
        [automation] = client.read_automations()
        trigger = automation.trigger
        assert trigger.expect == {"s3.object.created"}
        assert trigger.match.model_dump()["prefect.resource.id"] == f"s3://{bucket}/docs/*"

    # What the scheduler does at 2 a.m.: a run with the deployment's own parameters only.
    run = run_deployment("ingest-documents/scheduled", timeout=0)
    processes = Processes(tmp_path)
    processes.start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "ingest-process",
                               "--run-once"], {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"})
    try:
        with get_client(sync_client=True) as client:
            final = wait_until(lambda: (lambda r: r if r.state.is_final() else None)(
                client.read_flow_run(run.id)), timeout=240, what="the worker's run", interval=1)
        assert final.state.is_completed(), processes.log("worker")[-3000:]
    finally:
        processes.stop_all()
