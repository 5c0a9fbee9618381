"""Word gaps in PDFs whose fonts have no space glyph: pypdf's width for the space, corrected.

TeX and many other producers never draw a space: a word gap is a negative offset in a ``TJ``
array, and pypdf inserts a space when the offset exceeds about half the font's space width.
For a font without a space glyph pypdf means to estimate that width from the other glyphs,
but it looks the space up under the character code 32 — and in a composite (Type0) font with
Identity encoding, CID 32 is whatever glyph the producer put there ('=', 'Q', '?' in the
documents we met). With a glyph wider than the space the gaps fall under the threshold and
whole lines come out as one word: 10% of the words of the Debian Reference ran together
(``canmanagemultipleversionsofpackageswithoutusing``), 2% of a LuaLaTeX manual. The bug is
py-pdf/pypdf#3978, open as of pypdf 7.1.1.

``install()`` wraps ``Font.from_font_resource`` so that a font whose own character map says
that the glyph taken for the space is another character gets pypdf's estimate for a font
without one (half the average glyph width; fixed pitch: the glyph width). Fonts with a real
space glyph, or with no character map to tell, are left as pypdf builds them. Should pypdf's
internals move, nothing is patched and extraction stays pypdf's own.
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


def estimated_space_width(font: Any) -> float | None:
    """The space width pypdf should use for ``font`` (a ``pypdf`` ``Font``), or ``None`` when
    pypdf's own is right: its character map knows the glyph it took for the space, and that
    glyph is not white space."""
    mapped = font.character_map.get(font.space_char) if font.character_map else None
    if mapped is None or mapped.isspace():
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
        def from_font_resource(cls, *args, **kwargs):
            font = build(cls, *args, **kwargs)
            try:
                width = estimated_space_width(font)
            except (AttributeError, TypeError):  # another pypdf's Font: leave it alone
                width = None
            if width:
                font.space_width = width
            return font

        Font.from_font_resource = classmethod(from_font_resource)
