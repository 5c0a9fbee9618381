"""The error hierarchy of the ingest core.

Two families matter to the pipeline:

* ``TransientError`` — worth retrying (network blips, S3 or Qdrant unreachable). Prefect's
  retry condition looks for exactly this type.
* ``FileRejected`` — a permanent property of one file (corrupt, encrypted, ...). It never
  escapes a file's processing: it becomes that file's outcome.

Everything else that is the caller's fault (bad settings, a collection that does not fit the
model) is a ``ConfigError`` and stops the run before anything is written.
"""

from __future__ import annotations

from tasks.core.models import Reason


class IngestError(Exception):
    """Base of every error raised on purpose by the ingest core."""


class ConfigError(IngestError):
    """Settings or parameters that cannot work; raised before any write."""


class CollectionMismatchError(ConfigError):
    """An existing collection whose vector size or distance does not fit the model."""


class ModelError(ConfigError):
    """The embedding model cannot be resolved or failed its integrity check."""


class TransientError(IngestError):
    """A fault that may pass on its own; retried with backoff."""

    reason: Reason = Reason.ERROR


class SourceUnavailableError(TransientError):
    """The file source (S3 endpoint, network share) did not answer."""

    reason = Reason.SOURCE_UNAVAILABLE


class StoreUnavailableError(TransientError):
    """The vector store did not answer or answered with a server-side error."""

    reason = Reason.STORE_UNAVAILABLE


class StoreError(IngestError):
    """The vector store refused a request for a reason retrying will not fix."""


class FileRejected(IngestError):
    """A permanent, per-file reason not to index a file; becomes its outcome."""

    def __init__(self, reason: Reason, detail: str, *, pages: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.pages = pages

    def __reduce__(self):  # crosses process boundaries (parse workers): keep every field
        return (self.__class__, (self.reason, self.detail), {"pages": self.pages})
