"""The three ways the ingest flow is run, as Prefect deployments.

* ``manual`` — started from the Prefect UI ("Custom run"): the form is built from the flow's
  typed parameters (titles, descriptions, defaults, bounds; the server refuses bad values).
* ``scheduled`` — a cron schedule over configured sources; every parameter comes with the
  schedule, so a scheduled run never lacks one. With skip-unchanged it is also the safety net
  behind the event-driven path (anything the watcher missed is picked up here).
* ``on-new-objects`` — triggered by the watcher's ``s3.object.created`` events: one run per
  coalesced batch (the event labelled ``ingest.batch.last``), over exactly the batch's objects.

``prefect.yaml`` declares the same three for ``prefect deploy --all``; ``serve.py`` serves them.
"""

from __future__ import annotations

from typing import Annotated

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


def _with_titles(deployment):
    """Prefect titles each form field with the parameter's name; show the titles stated on the
    parameter types instead (``Chunk size (tokens)``, not ``chunk_tokens``)."""
    for name, field in IngestParams.model_fields.items():
        prop = deployment._parameter_openapi_schema.properties.get(name)
        if prop is not None and field.title:
            prop["title"] = field.title
    return deployment


def build_deployments(settings: DeploymentSettings | None = None) -> list:
    """The deployments to serve: ``manual`` always, the others when configured."""
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    from flows.ingest_flow import ingest_documents

    settings = settings or DeploymentSettings()
    defaults = settings.defaults()
    deployments = [ingest_documents.to_deployment(
        name="manual", description="Ingest documents on demand: fill in the sources in the run form.",
        tags=["ingest"], concurrency_limit=CONCURRENCY, parameters=defaults)]
    if settings.schedule_sources:
        params = settings.scheduled_params().model_dump(mode="json")
        deployments.append(ingest_documents.to_deployment(
            name="scheduled", description=f"Ingest {', '.join(settings.schedule_sources)} on a schedule "
                                          "(unchanged files are skipped without being read).",
            tags=["ingest", "scheduled"], concurrency_limit=CONCURRENCY, parameters=params,
            schedules=[Cron(settings.schedule_cron, timezone=settings.schedule_timezone,
                            parameters=params)]))
    if settings.watch_url:
        batch = {**defaults, "sources": "{{ event.payload.batch }}"}
        deployments.append(ingest_documents.to_deployment(
            name="on-new-objects", description=f"Ingest new objects under {settings.watch_url} "
                                               "as `ingest watch` announces them, one run per batch.",
            tags=["ingest", "events"], concurrency_limit=CONCURRENCY, parameters=defaults,
            triggers=[DeploymentEventTrigger(
                name="new objects", expect={EVENT_NAME},
                match={"prefect.resource.id": f"{settings.watch_url.rstrip('*')}*",
                       BATCH_LABEL: "true"},
                parameters=batch)]))
    return [_with_titles(d) for d in deployments]
