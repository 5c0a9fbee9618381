"""The hit list's order: spread over pages (pure: hits built by hand)."""

from __future__ import annotations

from tasks.core.payload import Hit
from tasks.core.search import spread_over_pages


def hit(source: str, pages: tuple[int, int] | None, chunk: int) -> Hit:
    start, end = pages if pages else (None, None)
    return Hit(score=1.0 - chunk / 100, source=source, file_name=source.rsplit("/", 1)[-1],
               page_start=start, page_end=end, chunk_index=chunk, text=f"chunk {chunk}")


def cited(hits: list[Hit]) -> list[tuple[str, str, int]]:
    return [(h.file_name, h.pages, h.chunk_index) for h in hits]


def test_a_page_is_cited_again_only_after_every_page_once():
    hits = [hit("/d/a.pdf", (3, 3), 7), hit("/d/a.pdf", (3, 3), 8), hit("/d/a.pdf", (3, 4), 9),
            hit("/d/b.pdf", (3, 3), 2), hit("/d/a.pdf", (2, 2), 5), hit("/d/a.pdf", (3, 3), 6),
            hit("/d/a.pdf", (2, 2), 4)]
    assert cited(spread_over_pages(hits)) == [
        ("a.pdf", "p. 3", 7), ("a.pdf", "pp. 3-4", 9), ("b.pdf", "p. 3", 2), ("a.pdf", "p. 2", 5),
        ("a.pdf", "p. 3", 8), ("a.pdf", "p. 2", 4),   # second citations, in their order
        ("a.pdf", "p. 3", 6)]                         # then a third


def test_a_single_page_still_fills_the_list():
    hits = [hit("/d/memo.pdf", (1, 1), i) for i in range(4)]
    assert spread_over_pages(hits) == hits


def test_a_page_without_an_end_is_the_same_citation_as_one_ending_there():
    open_ended = Hit(score=0.5, source="/d/a.pdf", file_name="a.pdf", page_start=4, page_end=None,
                     chunk_index=2, text="")
    hits = [hit("/d/a.pdf", (4, 4), 1), open_ended, hit("/d/a.pdf", (5, 5), 3)]
    assert cited(spread_over_pages(hits)) == [
        ("a.pdf", "p. 4", 1), ("a.pdf", "p. 5", 3), ("a.pdf", "p. 4", 2)]


def test_files_with_the_same_name_in_other_folders_are_other_citations():
    hits = [hit("/x/a.pdf", (1, 1), 1), hit("/y/a.pdf", (1, 1), 1)]
    assert spread_over_pages(hits) == hits


def test_a_text_files_hits_count_as_first_citations():
    hits = [hit("/d/notes.txt", None, 0), hit("/d/a.pdf", (1, 1), 5), hit("/d/notes.txt", None, 1),
            hit("/d/a.pdf", (1, 1), 6), hit("/d/notes.txt", None, 2), hit("/d/a.pdf", (2, 2), 7)]
    assert cited(spread_over_pages(hits)) == [
        ("notes.txt", "", 0), ("a.pdf", "p. 1", 5), ("notes.txt", "", 1), ("notes.txt", "", 2),
        ("a.pdf", "p. 2", 7), ("a.pdf", "p. 1", 6)]
