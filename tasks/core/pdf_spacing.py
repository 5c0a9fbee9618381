"""Word gaps in PDFs whose fonts have no space glyph: pypdf's width for the space, corrected.

TeX and many other producers never draw a space: a word gap is a negative offset in a ``TJ``
array, and pypdf inserts a space when the offset exceeds about half the font's space width.
For a font without a space glyph pypdf means to estimate that width from the other glyphs,
but it looks the space up under the character code 32 — and in a composite (Type0) font with
Identity encoding, CID 32 is whatever glyph the producer put there ('=', '?', '8' in the
documents of ``make eval``). With a glyph wider than the space the gaps fall under the threshold and
whole lines come out as one word: 10% of the words of the Debian Reference ran together
(``canmanagemultipleversionsofpackageswithoutusing``), 2% of a LuaLaTeX manual. The bug is
py-pdf/pypdf#3978, open as of pypdf 7.1.1.

The same happens with TeX's Type 1 fonts in the T1 encoding, whose code 32 is the visible-space
glyph (``ÜblicherweisewerdeninLATEX…`` in the German LaTeX manual).

``install()`` wraps ``Font.from_font_resource`` so that a font known to lack a space glyph
(``has_no_space_glyph``: its character map calls the code-32 glyph another character, or its
subset's ``/CharSet`` has no ``/space``) gets pypdf's estimate for a font without one (half the
average glyph width; fixed pitch: the glyph width). Fonts with a real space glyph, or with
nothing to tell, are left as pypdf builds them. Should pypdf's internals move, nothing is
patched and extraction stays pypdf's own.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_FIXED_PITCH = 1  # PDF 32000-1, table 121: bit 1 of a font descriptor's /Flags
_installed = False
_lock = threading.Lock()


def has_no_space_glyph(font: Any, resource: Any = None) -> bool:
    """Whether the glyph pypdf takes for ``font``'s space is known not to be one: the font's
    character map calls it another character (composite fonts: whatever sits at CID 32), or —
    a simple Type 1 font — its descriptor's ``/CharSet``, the glyphs the embedded subset holds,
    has no ``/space`` (TeX's fonts: code 32 is the visible-space glyph ␣ in the T1 encoding,
    wider than a word gap)."""
    mapped = font.character_map.get(font.space_char) if font.character_map else None
    if mapped is not None:
        return not mapped.isspace()
    if resource is None or resource.get("/Subtype") != "/Type1":
        return False
    descriptor = resource.get("/FontDescriptor")
    charset = descriptor.get_object().get("/CharSet") if descriptor is not None else None
    if charset is None:
        return False
    return "/space" not in str(charset).replace("/", " /").split()


def estimated_space_width(font: Any, resource: Any = None) -> float | None:
    """The space width pypdf should use for ``font`` (a ``pypdf`` ``Font`` made from the font
    dictionary ``resource``), or ``None`` when pypdf's own stands (``has_no_space_glyph``)."""
    if not has_no_space_glyph(font, resource):
        return None
    widths = [w for key, w in font.character_widths.items()
              if key != "default" and isinstance(w, (int, float)) and w > 0]
    if not widths:
        return None
    if font.font_descriptor.flags & _FIXED_PITCH:
        return max(set(widths), key=widths.count)  # every glyph is as wide as the space
    return sum(widths) // len(widths) // 2  # pypdf's rule for a font without a space glyph


def install() -> None:
    """Correct pypdf's space width for fonts whose code-32 glyph is not a space (idempotent,
    process-wide)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        try:
            from pypdf.generic._font import Font

            build = Font.__dict__["from_font_resource"].__func__
        except (ImportError, KeyError, AttributeError) as exc:
            log.debug("pypdf's space width left as it is: %s", exc)
            return

        @functools.wraps(build)
        def from_font_resource(cls, resource, *args, **kwargs):
            font = build(cls, resource, *args, **kwargs)
            try:
                width = estimated_space_width(font, resource)
            except (AttributeError, TypeError, ValueError):  # another pypdf's Font: leave it
                width = None
            if width:
                font.space_width = width
            return font

        Font.from_font_resource = classmethod(from_font_resource)
