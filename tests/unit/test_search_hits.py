"""The hit list's rule: one hit per cited page (pure: hits built by hand)."""

from __future__ import annotations

from tasks.core.payload import Hit
from tasks.core.search import one_per_page


def hit(source: str, pages: tuple[int, int] | None, chunk: int) -> Hit:
    start, end = pages if pages else (None, None)
    return Hit(score=1.0 - chunk / 100, source=source, file_name=source.rsplit("/", 1)[-1],
               page_start=start, page_end=end, chunk_index=chunk, text=f"chunk {chunk}")


def test_a_page_already_cited_is_dropped_and_the_order_kept():
    hits = [hit("/d/a.pdf", (3, 3), 7), hit("/d/a.pdf", (3, 3), 8), hit("/d/a.pdf", (3, 4), 9),
            hit("/d/b.pdf", (3, 3), 2), hit("/d/a.pdf", (2, 2), 5), hit("/d/a.pdf", (3, 3), 6)]
    kept = one_per_page(hits)
    assert [(h.file_name, h.pages, h.chunk_index) for h in kept] == [
        ("a.pdf", "p. 3", 7), ("a.pdf", "pp. 3-4", 9), ("b.pdf", "p. 3", 2), ("a.pdf", "p. 2", 5)]


def test_a_page_without_an_end_is_the_same_citation_as_one_ending_there():
    assert len(one_per_page([hit("/d/a.pdf", (4, 4), 1), Hit(
        score=0.5, source="/d/a.pdf", file_name="a.pdf", page_start=4, page_end=None,
        chunk_index=2, text="")])) == 1


def test_files_with_the_same_name_in_other_folders_are_other_citations():
    assert len(one_per_page([hit("/x/a.pdf", (1, 1), 1), hit("/y/a.pdf", (1, 1), 1)])) == 2


def test_text_files_have_no_pages_and_keep_every_hit():
    hits = [hit("/d/notes.txt", None, 0), hit("/d/notes.txt", None, 1), hit("/d/notes.txt", None, 2)]
    assert one_per_page(hits) == hits
