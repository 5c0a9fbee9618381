"""Prune: delete the points of files that are no longer in the source.

Only called after a listing that completed without error (a failed listing fails the run
before this), and guarded: when it would delete more than a fraction of the collection's
files, it refuses and deletes nothing unless forced — an emptied or mistyped source must not
wipe a collection.
"""

from __future__ import annotations

from collections.abc import Iterable

from tasks.core.models import FileOutcome, PruneReport, Reason, Status
from tasks.core.sources import is_hidden, local_path, matches_include
from tasks.core.store.base import VectorStore


def source_roots(sources: Iterable[str]) -> list[str]:
    """URI prefixes a run's sources cover: ``…/folder/`` for folders, exact URIs for files."""
    roots: list[str] = []
    for source in sources:
        if source.startswith("s3://"):
            # s3://bucket/name may be an object or a prefix (as in discovery): cover both.
            bare = source.rstrip("/")
            roots += [bare + "/"] if source.endswith("/") or bare.count("/") == 2 else [bare, bare + "/"]
            continue
        path = local_path(source).resolve()
        roots.append(path.as_uri() + "/" if path.is_dir() else path.as_uri())
    return roots


def _covered(uri: str, roots: list[str], include: list[str]) -> bool:
    """Would a listing of these roots with these globs have yielded ``uri``?"""
    for root in roots:
        if uri == root:
            return True
        if root.endswith("/") and uri.startswith(root):
            relative = uri[len(root):]
            return not is_hidden(relative) and matches_include(relative, include)
    return False


def plan_prune(indexed: set[str], listed: set[str], roots: list[str], include: list[str]) -> list[str]:
    """Indexed sources the listing should have yielded but did not, sorted."""
    return sorted(uri for uri in indexed - listed if _covered(uri, roots, include))


def prune_missing(store: VectorStore, collection: str, *, listed: set[str], sources: list[str],
                  include: list[str], max_fraction: float,
                  force: bool) -> tuple[PruneReport, list[FileOutcome]]:
    """Delete indexed files missing from a complete listing, within the guard."""
    indexed = store.indexed_sources(collection)
    missing = plan_prune(indexed, listed, source_roots(sources), include)
    if not missing:
        return PruneReport(deleted=0, indexed_files=len(indexed)), []
    fraction = len(missing) / len(indexed)
    if fraction > max_fraction and not force:
        refused = (f"prune refused: it would delete {len(missing)} of {len(indexed)} files "
                   f"({fraction:.0%}, more than the limit of {max_fraction:.0%}); nothing was "
                   "deleted. Check the source, or force it (--force-prune)")
        return PruneReport(deleted=0, indexed_files=len(indexed), refused=refused), []
    store.delete_sources(collection, missing)
    outcomes = [FileOutcome(source=uri, status=Status.DELETED, reason=Reason.NOT_IN_SOURCE,
                            detail="no longer in the source: its points were deleted")
                for uri in missing]
    return PruneReport(deleted=len(missing), indexed_files=len(indexed)), outcomes
