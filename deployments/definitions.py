"""The three ways the ingest flow is run, as Prefect deployments.

* ``manual`` — started from the Prefect UI ("Custom run"): the form is built from the flow's
  typed parameters (titles, descriptions, defaults, bounds; the server refuses bad values).
* ``scheduled`` — a cron schedule over configured sources; every parameter comes with the
  schedule, so a scheduled run never lacks one. With skip-unchanged it is also the safety net
  behind the event-driven path (anything the watcher missed is picked up here).
* ``on-new-objects`` — triggered by the watcher's ``s3.object.created`` events: one run per
  coalesced batch (the event labelled ``ingest.batch.last``), over exactly the batch's objects.

They are declared once, here (``specs``), and rendered two ways: ``build_deployments`` for
``serve.py`` (one process), and ``render_prefect_yaml`` for ``prefect deploy --all`` onto a work
pool. The committed ``prefect.yaml`` is that rendering with ``{{ $INGEST_SCHEDULE_SOURCE }}`` and
``{{ $INGEST_WATCH_URL }}`` left for ``prefect deploy`` to fill in (a test keeps it in sync);
``python -m deployments.definitions > prefect.yaml`` renders it for the current ``INGEST_*``
environment instead.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tasks.core.settings import CollectionName, IngestParams, IngestSettings
from tasks.core.watch import BATCH_LABEL, EVENT_NAME

# One run per deployment at a time; runs of different deployments over one embedded store
# queue on its run lock (INGEST_STORE_WAIT_S).
CONCURRENCY = 1


class DeploymentSettings(BaseSettings):
    """What the served deployments run on (environment, prefix ``INGEST_``)."""

    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    schedule_sources: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("INGEST_SCHEDULE_SOURCES", "INGEST_SCHEDULE_SOURCE"),
        description="Sources of the scheduled run, comma-separated; "
                                          "empty: no scheduled deployment")
    schedule_cron: str = Field("0 2 * * *", description="When the scheduled run starts (cron)")
    schedule_timezone: str = Field("UTC", description="Time zone of the cron expression")
    schedule_prune: bool = Field(False, description="Scheduled runs also prune vanished files")
    watch_url: str | None = Field(None, pattern=r"^s3://[^/]+(/.*)?$",
                                  description="s3://bucket/prefix whose watcher events trigger "
                                              "runs; empty: no event-triggered deployment")
    deploy_collection: CollectionName | None = Field(
        None, description="Collection of scheduled and event runs (default: INGEST_COLLECTION)")

    @field_validator("schedule_sources", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> DeploymentSettings:
        from prefect.client.schemas.schedules import CronSchedule

        # Refused here, when the deployments are built, not at 2 a.m. by the scheduler.
        CronSchedule(cron=self.schedule_cron, timezone=self.schedule_timezone)
        if self.schedule_sources:
            self.scheduled_params()
        return self

    def scheduled_params(self) -> IngestParams:
        return IngestParams.with_defaults_from(IngestSettings(), sources=self.schedule_sources,
                                               collection=self.deploy_collection,
                                               prune=self.schedule_prune)

    def defaults(self) -> dict:
        """Parameters every deployment carries from the environment: the collection and the
        chunking (``INGEST_COLLECTION``, ``INGEST_CHUNK_*``, ``INGEST_DEPLOY_COLLECTION``), so
        the run form shows the values runs will use."""
        params = IngestParams.with_defaults_from(IngestSettings(), sources=["."],
                                                 collection=self.deploy_collection)
        return params.model_dump(include={"collection", "chunk_tokens", "chunk_overlap"})


ENTRYPOINT = "flows/ingest_flow.py:ingest_documents"
WORK_POOL = "ingest-process"
# Left in the committed prefect.yaml for `prefect deploy` to fill from its environment.
SOURCE_PLACEHOLDER, WATCH_PLACEHOLDER = "{{ $INGEST_SCHEDULE_SOURCE }}", "{{ $INGEST_WATCH_URL }}"


def specs(settings: DeploymentSettings) -> list[dict[str, Any]]:
    """The deployments, as data: ``manual`` always, the others when configured. Each carries
    the collection and chunking its runs use, so the run form shows them."""
    defaults = settings.defaults()
    declared: list[dict[str, Any]] = [{
        "name": "manual", "tags": ["ingest"], "parameters": defaults,
        "description": "Ingest documents on demand: fill in the sources in the run form."}]
    if settings.schedule_sources:
        params = settings.scheduled_params().model_dump(mode="json", exclude={"names"})
        declared.append({
            "name": "scheduled", "tags": ["ingest", "scheduled"], "parameters": params,
            "description": f"Ingest {', '.join(settings.schedule_sources)} on a schedule "
                           "(unchanged files are skipped without being read).",
            "schedule": {"cron": settings.schedule_cron, "timezone": settings.schedule_timezone,
                         "parameters": params}})
    if settings.watch_url:
        declared.append({
            "name": "on-new-objects", "tags": ["ingest", "events"], "parameters": defaults,
            "description": f"Ingest new objects under {settings.watch_url} as `ingest watch` "
                           "announces them, one run per batch.",
            "trigger": {"name": "new objects", "expect": [EVENT_NAME],
                        "match": {"prefect.resource.id": f"{settings.watch_url.rstrip('*')}*",
                                  BATCH_LABEL: "true"},
                        "parameters": {**defaults, "sources": "{{ event.payload.batch }}"}}})
    return declared


def _with_titles(deployment):
    """Prefect titles each form field with the parameter's name; show the titles stated on the
    parameter types instead (``Chunk size (tokens)``, not ``chunk_tokens``)."""
    for name, field in IngestParams.model_fields.items():
        prop = deployment._parameter_openapi_schema.properties.get(name)
        if prop is not None and field.title:
            prop["title"] = field.title
    return deployment


def build_deployments(settings: DeploymentSettings | None = None) -> list:
    """The deployments to serve (``serve.py``)."""
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    from flows.ingest_flow import ingest_documents

    deployments = []
    for spec in specs(settings or DeploymentSettings()):
        schedule, trigger = spec.get("schedule"), spec.get("trigger")
        deployments.append(_with_titles(ingest_documents.to_deployment(
            name=spec["name"], description=spec["description"], tags=spec["tags"],
            concurrency_limit=CONCURRENCY, parameters=spec["parameters"],
            schedules=[Cron(schedule["cron"], timezone=schedule["timezone"],
                            parameters=schedule["parameters"])] if schedule else None,
            triggers=[DeploymentEventTrigger(**trigger)] if trigger else None)))
    return deployments


def render_prefect_yaml(settings: DeploymentSettings | None = None) -> str:
    """``prefect.yaml`` for ``prefect deploy --all`` onto the ``ingest-process`` work pool.

    Without settings: every deployment, with the schedule's source and the watched prefix left
    as placeholders that ``prefect deploy`` fills from its environment.
    """
    import yaml

    if settings is None:
        settings = DeploymentSettings.model_construct(
            **{**DeploymentSettings().model_dump(), "schedule_sources": [SOURCE_PLACEHOLDER],
               "watch_url": WATCH_PLACEHOLDER})
    deployments = []
    for spec in specs(settings):
        entry: dict[str, Any] = {"name": spec["name"], "entrypoint": ENTRYPOINT,
                                 "description": spec["description"], "tags": spec["tags"],
                                 "concurrency_limit": CONCURRENCY, "parameters": spec["parameters"]}
        if "schedule" in spec:
            entry["schedules"] = [spec["schedule"]]
        if "trigger" in spec:
            entry["triggers"] = [{"type": "event", "enabled": True, **spec["trigger"]}]
        entry["work_pool"] = {"name": WORK_POOL}
        deployments.append(entry)
    header = (
        "# Rendered from deployments/definitions.py (the one declaration of the deployments):\n"
        "#   python -m deployments.definitions > prefect.yaml\n"
        "# Deploy onto a process work pool:\n"
        f"#   prefect work-pool create {WORK_POOL} --type process\n"
        "#   INGEST_SCHEDULE_SOURCE=s3://bucket/docs/ INGEST_WATCH_URL=s3://bucket/docs/ prefect deploy --all\n"
        f"#   prefect worker start --pool {WORK_POOL}\n"
        "# `{{ $NAME }}` is filled from the environment of `prefect deploy`; the flow's own settings\n"
        "# (INGEST_QDRANT_PATH, QDRANT_URL, AWS_*) are read from the worker's environment at run time.\n")
    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data) -> bool:  # each deployment reads on its own
            return True

    body = yaml.dump({"name": "knowledge-ingest", "prefect-version": "3.9.1",
                      "deployments": deployments}, Dumper=Dumper, sort_keys=False, width=100,
                     allow_unicode=True)
    return header + body


if __name__ == "__main__":
    # Rendered for this environment's INGEST_* settings when any deployment is configured.
    configured = DeploymentSettings()
    sys.stdout.write(render_prefect_yaml(configured if configured.schedule_sources or configured.watch_url
                                         else None))
