"""Deterministic identities: point IDs and the fingerprint of an indexing configuration."""

from __future__ import annotations

import hashlib
import json
import uuid

# Fixed namespace: the same source URI and chunk index give the same point ID on every machine.
POINT_NAMESPACE = uuid.UUID("6f1c2d0e-3b7a-5c55-9a43-1f3e2b8d7c10")
# Bump when readers or chunking change what a file turns into: indexed files then re-embed.
# 2: ligatures unfolded, pypdf with its font/RTL/Brotli extras, ISO-2022/HZ and odd UTF-16 decoded.
# 3: spacing accents of old TeX fonts folded into their letters, line-end hyphenation joined (PDFs).
# 4: word gaps of PDF fonts whose code-32 glyph is not a space (pdf_spacing).
PIPELINE_VERSION = "4"


def point_id(source_uri: str, chunk_index: int) -> str:
    """uuid5 of the source URI and chunk index."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{source_uri}#{chunk_index}"))


def runtime_label(precision: str, backend: str) -> str:
    """How vectors were made, as one label: ``fp32``, ``bf16`` (torch), ``fp32-openvino``,
    ``bf16-openvino``."""
    return precision if backend == "torch" else f"{precision}-{backend}"


def vectors_label(runtime: str) -> str:
    """What a runtime's vectors are, as the fingerprint records them: ``fp32`` for fp32 on
    OpenVINO too — the same arithmetic in another engine, its vectors fp32's (cosine to torch's
    at least 0.9999999 over 900 real chunks) — so a file embedded by one is not re-embedded by
    the other; the runtime's own label for the others (bf16 differs by runtime: 0.9986 at worst
    on OpenVINO)."""
    return "fp32" if runtime == "fp32-openvino" else runtime


def config_fingerprint(*, model: str, chunk_tokens: int, chunk_overlap: int,
                       precision: str = "fp32") -> str:
    """Short hash of everything besides the file's bytes that decides its points."""
    spec = {"model": model, "chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap,
            "pipeline": PIPELINE_VERSION}
    # ``precision`` names the numbers and the runtime that made them (``vectors_label``): fp32,
    # bf16, bf16-openvino.
    if precision != "fp32":  # fp32 fingerprints stay what they were before precisions existed
        spec["precision"] = precision
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
