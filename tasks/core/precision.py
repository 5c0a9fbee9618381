"""Which runtime embeds: ``INGEST_EMBED_PRECISION`` (``auto``, ``fp32``, ``bf16``) turned into one
of ``embedding.RUNTIMES`` on this CPU, by measuring.

``auto`` (the default) times every runtime this process can run on a fixed probe of natural
texts — fp32 compiled by OpenVINO everywhere, a bf16 runtime only where the CPU has native bf16:
elsewhere it cannot win, and the probe's ~11 s and ~280 MB would be spent for nothing — and
keeps the fastest whose vectors pass the quality gate against fp32, if it beats fp32 by its
``min_speedup``; otherwise fp32. ``bf16`` keeps the fastest bf16 runtime under the same speed
rule (the user asked for it: no gate). ``fp32`` is the reference (torch) and is never timed.

The gate (``MIN_COSINE``, ``MEAN_COSINE``): every probe vector's cosine to its fp32 vector must
be at least 0.998, and their mean at least 0.9999. The minimum is the guard that matters: a
runtime that is right on average but wrong on some inputs (an overflow, an operator a compiler
gets wrong, a quantisation that flattens one kind of text) shows in the worst vector, not in the
mean. 0.998 is just below the lowest cosine bf16 on OpenVINO reached over 8,500 real chunks
(0.9986; mean 0.99998), where retrieval on ``make eval`` was unchanged; the mean bound is the
order of magnitude both bf16 runtimes sit at (0.99998), ten times looser.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasks.core import embedding, openvino_runtime
from tasks.core.errors import ModelError
from tasks.core.ids import vectors_label
from tasks.core.openvino_runtime import unsupported_reason
from tasks.core.settings import EmbedPrecision

#: A runtime with other vectors (bf16) replaces fp32 only when it beats it by this much: below
#: it, the probe's timing noise on a busy machine decides, and CPUs that emulate bf16 run it
#: slower — a small gain is not worth vectors that differ.
MIN_SPEEDUP = 1.2
#: fp32 on OpenVINO makes fp32's vectors (``ids.vectors_label``): all it can cost is time, so a
#: smaller lead is enough. On an AVX2 EPYC the probe measured it 1.19-1.30x, whole runs in
#: their own processes 1.09-1.17x: the probe reads high, and a wrong pick costs only the few
#: percent it misread.
SAME_VECTORS_MIN_SPEEDUP = 1.05
MIN_COSINE = 0.998
MEAN_COSINE = 0.9999
#: The runtimes ``auto`` and ``bf16`` may take over fp32, fastest-expected first.
FASTER_RUNTIMES = ("bf16-openvino", "fp32-openvino", "bf16")

log = logging.getLogger(__name__)

# Natural sentences of the kinds people index — prose, law, manuals, code, numbers; English,
# French and German — joined into passages of ~100-150 tokens (what chunks are) and kept short
# (what queries are). Fixed: every process probes with the same texts.
_SENTENCES = (
    "The committee approved the annual budget after a long debate about road maintenance.",
    "Glacial lakes look turquoise because fine rock flour scatters the light that enters them.",
    "Run `pip install --upgrade pip` before installing the package into a fresh environment.",
    "Section 4(2) applies only where the employer has given written notice within 14 days.",
    "Le conseil municipal a voté la rénovation de la bibliothèque pour l'année prochaine.",
    "Die Arbeitszeit darf zehn Stunden werktäglich nur ausnahmsweise überschreiten.",
    "def chunk(text: str, size: int = 192) -> list[str]: return [text[i:i + size] for i in range(0, len(text), size)]",
    "Revenue grew 12.4% year over year to $3.81 billion, while operating costs fell by 2%.",
    "Tom Sawyer whitewashed the fence and persuaded his friends to pay him for the privilege.",
    "Replace the pump seals every 2,000 operating hours or whenever the pressure drops below 4 bar.",
    "Les élèves doivent rendre leurs devoirs avant vendredi midi, sans exception.",
    "Der Antrag ist schriftlich bei der zuständigen Behörde einzureichen.",
    "The \\usepackage{booktabs} command loads rules for tables of publication quality.",
    "Patients with a history of asthma should not take this medicine without advice.",
    "In 1885 the first American edition of the novel appeared with 174 illustrations.",
    "SELECT name, count(*) FROM orders GROUP BY name HAVING count(*) > 10 ORDER BY 2 DESC;",
    "The recipe calls for two cups of flour, a pinch of salt and three eggs, beaten.",
    "Error 503: the service is temporarily unavailable; retry after 30 seconds.",
    "Jules Verne décrit une expédition vers le pôle Nord à bord du Forward.",
    "Das Grundgesetz schützt die Würde des Menschen als obersten Wert der Verfassung.",
    "Each soldier shall carry his rifle at the order, the butt resting on the ground.",
    "The algorithm runs in O(n log n) time and uses O(n) additional memory.",
    "Click Settings, then Privacy, and turn off location history for all devices.",
    "Vectors are compared by cosine similarity; the nearest ones are returned first.",
)
_QUERIES = (
    "why are glacial lakes turquoise?", "how often are the pump seals replaced?",
    "rénovation de la bibliothèque", "Höchstarbeitszeit pro Tag", "booktabs table rules",
    "error 503 retry", "revenue growth last year", "SQL group by having",
)


def probe_texts() -> list[str]:
    """The fixed probe: 16 passages of six sentences each and 8 short queries."""
    n = len(_SENTENCES)
    passages = [" ".join(_SENTENCES[(start + k * 5) % n] for k in range(6)) for start in range(16)]
    return passages + list(_QUERIES)


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a process embeds with, and why."""

    runtime: str
    #: How ``INGEST_EMBED_PRECISION`` led to it, one line (logged; in the run's summary).
    why: str

    def __str__(self) -> str:
        return f"{self.runtime} ({self.why})"


@dataclass(frozen=True)
class Trial:
    """One runtime measured on the probe against fp32."""

    runtime: str
    speedup: float
    cosine_mean: float
    cosine_min: float

    @property
    def passes_gate(self) -> bool:
        return self.cosine_min >= MIN_COSINE and self.cosine_mean >= MEAN_COSINE

    def describe(self) -> str:
        return (f"{self.runtime} {self.speedup:.2f}x fp32, cosine to fp32 mean "
                f"{self.cosine_mean:.6f} min {self.cosine_min:.6f}")


def min_speedup(runtime: str) -> float:
    """How much faster than fp32 ``runtime`` must be to replace it."""
    return SAME_VECTORS_MIN_SPEEDUP if vectors_label(runtime) == "fp32" else MIN_SPEEDUP


def wanted(runtime: str, requested: EmbedPrecision, vectors: str | None = None) -> bool:
    """Whether ``runtime`` answers ``requested`` (``bf16``: bf16 runtimes only) and, if given,
    makes ``vectors`` (``ids.vectors_label``: an existing collection's)."""
    if requested == "bf16" and not runtime.startswith("bf16"):
        return False
    return vectors is None or vectors_label(runtime) == vectors


def candidates(name: str, model, requested: EmbedPrecision = "auto", vectors: str | None = None) -> list[str]:
    """The faster runtimes worth timing for ``model`` in this process (fastest-expected first),
    among those ``wanted``."""
    found = []
    for runtime in FASTER_RUNTIMES:
        if not wanted(runtime, requested, vectors):
            continue
        reason = skip_reason(runtime, model)
        if reason is None:
            found.append(runtime)
        else:
            log.info("%s is not tried for %s: %s", runtime, name, reason)
    return found


def skip_reason(runtime: str, model) -> str | None:
    """Why ``runtime`` is not timed here: this process cannot run it, or this CPU has no native
    bf16 — then torch emulates bf16 (0.19x fp32 measured on an AVX2 CPU, ~8 s of probing) and
    OpenVINO runs f32 under the bf16 name. ``None``: worth timing."""
    reason = unavailable_reason(runtime, model)
    if reason is None and runtime == "bf16" and not embedding.native_bf16():
        reason = "this CPU has no native bf16 (torch would emulate it, several times slower than fp32)"
    if reason is None and runtime == "bf16-openvino" and not openvino_runtime.native_bf16():
        reason = "OpenVINO lists no BF16 for this CPU (it would run the model in f32)"
    return reason


def unavailable_reason(runtime: str, model) -> str | None:
    """Why this process cannot run ``runtime`` for ``model``, or ``None``."""
    if runtime in ("fp32", "bf16"):
        return None
    if runtime in ("fp32-openvino", "bf16-openvino"):
        return unsupported_reason(model)
    return f"unknown runtime {runtime!r}"


def choose_runtime(name: str, model, requested: EmbedPrecision, build: Callable[[str], object], *,
                   vectors: str | None = None, context: str = "") -> RuntimeChoice:
    """The runtime for ``requested`` on this CPU (see the module's docstring); with ``vectors``
    (an existing collection's, ``ids.vectors_label``) only among the runtimes that make them.

    ``build`` makes (and may keep) the embedder of a runtime. Each trial costs ~1 s; without
    candidates (``skip_reason``) nothing is timed. ``context`` ends the first part of ``why``.
    """
    asked = f"INGEST_EMBED_PRECISION={requested}{context}"
    if requested == "fp32":
        return RuntimeChoice("fp32", asked)
    runtimes = candidates(name, model, requested, vectors)
    if not runtimes:  # nothing to compare: fp32 without timing it
        skipped = [r for r in FASTER_RUNTIMES if wanted(r, requested, vectors)]
        why = (f"{asked}: no faster runtime to try here"
               + (" (" + "; ".join(f"{r}: {skip_reason(r, model)}" for r in skipped) + ")" if skipped else ""))
        (log.info if requested == "auto" else log.warning)("embedding with fp32: %s", why)
        return RuntimeChoice("fp32", why)
    embedders = {"fp32": build("fp32")}
    for runtime in runtimes:
        try:
            embedders[runtime] = build(runtime)
        except ModelError as exc:
            log.warning("%s", exc)
    timed = _timed(embedders, probe_texts())
    reference_s, reference = timed.pop("fp32")
    trials = []
    for runtime, (seconds, vectors) in timed.items():
        cosines = (reference * vectors).sum(axis=1)
        trial = Trial(runtime, reference_s / seconds, float(cosines.mean()), float(cosines.min()))
        log.info("%s", trial.describe())
        trials.append(trial)
    eligible = [t for t in trials
                if t.speedup >= min_speedup(t.runtime) and (requested == "bf16" or t.passes_gate)]
    if not eligible:
        best = max(trials, key=lambda t: t.speedup, default=None)
        why = (f"{asked}: no runtime passed "
               + ("the speed rule and the quality gate" if requested == "auto" else "the speed rule")
               + (f" (best: {best.describe()})" if best else ""))
        log.warning("embedding with fp32: %s", why)
        return RuntimeChoice("fp32", why)
    chosen = max(eligible, key=lambda t: t.speedup)
    choice = RuntimeChoice(chosen.runtime, f"{asked}: {chosen.describe()}")
    log.info("embedding with %s", choice)
    return choice


def _timed(embedders: dict[str, object], texts: list[str]) -> dict[str, tuple[float, np.ndarray]]:
    """Each runtime's best of two timed passes over ``texts`` (after a warm-up), and its
    vectors. The runtimes take turns, pass by pass, so that other work on the machine (another
    program, Prefect's server starting beside the model) slows them alike instead of whichever
    happened to be timed then: one after the other, a quiet start-up once timed fp32 on OpenVINO
    at 0.91x torch, where it measures 1.2-1.3x."""
    counts = [len(next(iter(embedders.values())).tokenizer.encode(t).ids) for t in texts]
    for embedder in embedders.values():
        embedder.embed(texts[:2], counts[:2], batch_size=2)
    best = {name: (float("inf"), None) for name in embedders}
    for _ in range(2):
        for name, embedder in embedders.items():
            started = time.perf_counter()
            vectors = embedder.embed(texts, counts, batch_size=16)
            seconds = time.perf_counter() - started
            best[name] = (min(best[name][0], seconds), vectors)
    return best
