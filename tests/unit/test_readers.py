"""Readers: type by content, encodings, and every pypdf failure as a typed rejection."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.core.errors import FileRejected
from tasks.core.models import DocumentKind, Reason
from tasks.core.readers import read_document, read_pdf, read_text, sniff_kind
from tests.conftest import DATA, MIXED

PROSE = ("Ceci est un texte en français : élève, garçon, déjà vu, œuvre. "
         "Les enfants jouent dans le jardin pendant que leurs parents préparent le dîner. ") * 3


def rejection(call, *args, **kwargs) -> FileRejected:
    with pytest.raises(FileRejected) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "cp1252"])
def test_text_encodings_decode_to_the_same_text(encoding):
    document = read_text(PROSE.encode(encoding))
    assert document.kind is DocumentKind.TEXT
    assert document.pages[0].text == PROSE
    assert document.pages[0].number is None


@pytest.mark.parametrize("text,encoding", [
    ("Это русский текст в кодировке Windows-1251, проверка определения кодировки. " * 3, "cp1251"),
    ("これは日本語のテキストです。文字コードの判定をテストします。" * 3, "shift_jis"),
])
def test_legacy_code_pages_are_detected(text, encoding):
    assert read_text(text.encode(encoding)).pages[0].text == text


def test_text_starting_with_weak_magic_is_still_text():
    # "BM" is BMP's magic number; prose must not be rejected as an image.
    assert read_document(b"BMW builds cars in Munich.\n", "cars.txt", max_pages=10).pages[0].text


def test_crlf_bom_and_nul_are_cleaned():
    document = read_text(b"\xef\xbb\xbfline one\r\nline\x00 two\r\n")
    assert document.pages[0].text == "line one\nline two\n"


@pytest.mark.parametrize("data,reason", [
    (b"", Reason.EMPTY),
    (b"  \r\n\t\n", Reason.EMPTY),
    ("   ".encode("utf-16"), Reason.EMPTY),
])
def test_empty_text(data, reason):
    assert rejection(read_document, data, "x.txt", max_pages=10).reason is reason


def test_binary_named_txt_is_undecodable_or_unsupported():
    assert rejection(read_document, (MIXED / "binary.txt").read_bytes(), "binary.txt",
                     max_pages=10).reason is Reason.UNDECODABLE
    png = (MIXED / "picture.png").read_bytes() + bytes(range(256)) * 8
    assert rejection(read_document, png, "photo.txt", max_pages=10).reason is Reason.UNSUPPORTED_TYPE


def test_type_is_decided_by_content():
    pdf = (DATA / "sourdough.pdf").read_bytes()
    assert sniff_kind(pdf[:8192], "notes.txt") is DocumentKind.PDF
    assert sniff_kind(pdf[:8192], "no-extension") is DocumentKind.PDF
    png = (MIXED / "picture.png").read_bytes()
    assert rejection(sniff_kind, png, "scan.pdf").reason is Reason.UNSUPPORTED_TYPE
    assert rejection(sniff_kind, b"just words", "fake.pdf").reason is Reason.CORRUPT
    assert rejection(sniff_kind, b"PK\x03\x04rest", "report.docx").reason is Reason.UNSUPPORTED_TYPE


def test_pdf_pages_keep_their_numbers():
    document = read_pdf((MIXED / "alpine-lakes.pdf").read_bytes(), max_pages=100)
    assert [p.number for p in document.pages] == [1, 2, 3, 4]
    assert "turquoise" in document.pages[1].text
    assert "trout" in document.pages[2].text
    assert document.page_count == 4


def test_encrypted_pdf_needs_password_but_owner_only_opens():
    assert rejection(read_pdf, (MIXED / "encrypted.pdf").read_bytes(),
                     max_pages=10).reason is Reason.ENCRYPTED
    opened = read_pdf((MIXED / "owner-password-only.pdf").read_bytes(), max_pages=10)
    assert "starter" in opened.pages[0].text


@pytest.mark.parametrize("name,reason", [("scanned.pdf", Reason.NO_TEXT), ("corrupt.pdf", Reason.CORRUPT)])
def test_bad_pdfs(name, reason):
    error = rejection(read_pdf, (MIXED / name).read_bytes(), max_pages=10)
    assert error.reason is reason
    assert error.detail


def test_too_many_pages():
    error = rejection(read_pdf, (MIXED / "alpine-lakes.pdf").read_bytes(), max_pages=3)
    assert error.reason is Reason.TOO_LARGE and error.pages == 4


def test_truncated_pdf_is_rejected_or_partly_read():
    try:
        document = read_pdf((DATA / "truncated.pdf").read_bytes(), max_pages=10)
    except FileRejected as error:
        assert error.reason in (Reason.CORRUPT, Reason.NO_TEXT, Reason.EMPTY)
    else:
        assert document.pages


def test_exceptions_from_extract_text_cost_only_their_page(monkeypatch):
    from pypdf import PageObject

    original = PageObject.extract_text
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyError("/Font")  # not a PdfReadError: pypdf raises all sorts
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PageObject, "extract_text", flaky)
    document = read_pdf((MIXED / "alpine-lakes.pdf").read_bytes(), max_pages=10)
    assert document.unreadable_pages == (2,)
    assert [p.number for p in document.pages] == [1, 3, 4]


@pytest.mark.parametrize("error", [KeyError("/Root"), ValueError("bad"), TypeError("x"),
                                   RecursionError(), AttributeError("y"), IndexError("z")])
def test_any_parser_exception_is_corrupt(monkeypatch, error):
    import pypdf

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(pypdf, "PdfReader", broken)
    assert rejection(read_pdf, b"%PDF-1.4 whatever", max_pages=10).reason is Reason.CORRUPT


def test_extraction_failing_everywhere_is_corrupt(monkeypatch):
    from pypdf import PageObject

    def broken(self, *args, **kwargs):
        raise AssertionError("broken content stream")

    monkeypatch.setattr(PageObject, "extract_text", broken)
    assert rejection(read_pdf, (MIXED / "alpine-lakes.pdf").read_bytes(),
                     max_pages=10).reason is Reason.CORRUPT


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.sampled_from(["x.pdf", "x.txt", "x"]))
def test_fuzzed_input_never_escapes_as_anything_but_a_rejection(tail, name):
    pdf = (DATA / "sourdough.pdf").read_bytes()
    for data in (b"%PDF-1.5\n" + tail, pdf[: len(tail) % len(pdf)] + tail, tail):
        try:
            read_document(data, name, max_pages=50)
        except FileRejected:
            pass


def test_parser_warnings_are_counted_on_the_file_not_printed(capfd):
    from tests.data.generate import misplaced_xref_pdf

    document = read_pdf(misplaced_xref_pdf(MIXED / "alpine-lakes.pdf"), max_pages=10)
    assert len(document.pages) == 4 and document.warning_count >= 1
    assert "startxref" in document.warnings[0]
    assert document.notes() == (f"{document.warning_count} parser warning"
                                f"{'s' if document.warning_count > 1 else ''}, first: {document.warnings[0]}",)
    out, err = capfd.readouterr()
    assert "startxref" not in out + err
    clean = read_pdf((MIXED / "alpine-lakes.pdf").read_bytes(), max_pages=10)
    assert clean.warning_count == 0 and clean.notes() == ()


@pytest.mark.parametrize("encoding,text", [
    ("iso2022_jp", "氷河湖はなぜ青緑色なのか。岩粉が光を散乱させるからです。"),
    ("iso2022_kr", "빙하 호수는 왜 청록색인가. 암석 가루가 빛을 산란시키기 때문이다."),
    ("hz", "冰川湖为什么是绿松石色的？因为岩粉散射阳光。"),
])
def test_escape_sequence_encodings_are_decoded(encoding, text):
    document = read_text(text.encode(encoding))
    assert document.pages[0].text == text and document.repairs == ()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_of_odd_length_drops_its_dangling_byte(encoding):
    text = "Heat pumps move heat; a café keeps its accents. " * 4
    document = read_text(text.encode(encoding) + b"\x00")
    assert document.pages[0].text == text.strip() or document.pages[0].text == text
    assert document.repairs == ("dropped a dangling last byte (UTF-16 of odd length)",)
    assert document.notes() == document.repairs


def test_tildes_in_ascii_are_not_taken_for_hz():
    assert read_text(b"paths like ~{home} and ~/x stay ascii").encoding == "ascii"


def test_typographic_ligatures_are_unfolded():
    from tasks.core.readers import clean_text

    assert clean_text("The misﬁts, the ﬂour and the oﬃce") == "The misfits, the flour and the office"


def test_spacing_accents_of_old_tex_fonts_are_folded_into_their_letters():
    from tasks.core.readers import clean_text

    assert clean_text("F¨ur die ¨Anderungen der ´ecole, na¨ıve se˜nor") == "Für die Änderungen der école, naïve señor"
    # no accented letter in Unicode, or not before a letter: left as it is
    assert clean_text("3´4 and q¨ and a ¨ b") == "3´4 and q¨ and a ¨ b"


def test_words_split_at_line_ends_are_joined_in_pdf_text():
    from tasks.core.readers import join_hyphenated

    assert join_hyphenated("die Ände-\nrungen und soft\u00ad\nware") == "die Änderungen und software"
    # a hyphen before a capital, a number or the end of the text is a real one
    assert join_hyphenated("Arbeiter-\nUnfall, 1990-\n91, well-\nÉcole, end-") == "Arbeiter-\nUnfall, 1990-\n91, well-\nÉcole, end-"


def test_word_gaps_survive_a_composite_font_whose_code_32_glyph_is_a_letter():
    # TeX-style text: no space glyph, gaps as TJ offsets, a wide letter at CID 32 where pypdf
    # 7.1 looks up the space's width (py-pdf/pypdf#3978) — it printed "themonkmadea...".
    from tests.data.generate import composite_font_pdf

    data = composite_font_pdf(["the monk made a mammoth meal", "of warm lemon jam"])
    assert read_pdf(data, max_pages=5).pages[0].text == "the monk made a mammoth meal\nof warm lemon jam"
    # the kern inside each word stays a kern
    data = composite_font_pdf(["midsummer moon"], kern=-90)
    assert read_pdf(data, max_pages=5).pages[0].text == "midsummer moon"


def test_space_width_is_estimated_only_when_the_font_says_its_code_32_glyph_is_no_space():
    from types import SimpleNamespace

    from tasks.core.pdf_spacing import estimated_space_width

    def font(mapped, widths, flags=32):
        return SimpleNamespace(space_char=" ", character_map={" ": mapped} if mapped else {},
                               character_widths={" ": 833, **widths, "default": 1666},
                               font_descriptor=SimpleNamespace(flags=flags))

    assert estimated_space_width(font(" ", {"a": 500})) is None  # a real space glyph
    assert estimated_space_width(font(None, {"a": 500})) is None  # nothing says otherwise
    assert estimated_space_width(font("\u00a0", {"a": 500})) is None  # a no-break space is one
    assert estimated_space_width(font("=", {"a": 500, "b": 467})) == 300  # half the glyphs' mean
    assert estimated_space_width(font("=", {"a": 600, "b": 600}, flags=33)) == 600  # fixed pitch


def test_a_type1_subset_without_a_space_in_its_charset_has_no_space_glyph():
    # TeX's Type 1 fonts in the T1 encoding: code 32 is the visible-space glyph, and the subset's
    # /CharSet (the glyphs it holds) says there is no /space.
    from types import SimpleNamespace

    from pypdf.generic import DictionaryObject, NameObject, TextStringObject

    from tasks.core.pdf_spacing import has_no_space_glyph

    def resource(subtype="/Type1", charset="/A/B/a/b/comma/period"):
        descriptor = DictionaryObject()
        if charset is not None:
            descriptor[NameObject("/CharSet")] = TextStringObject(charset)
        return DictionaryObject({NameObject("/Subtype"): NameObject(subtype),
                                 NameObject("/FontDescriptor"): descriptor})

    simple = SimpleNamespace(space_char=" ", character_map={})
    assert has_no_space_glyph(simple, resource())
    assert not has_no_space_glyph(simple, resource(charset="/A/a/space/period"))
    assert not has_no_space_glyph(simple, resource(charset=None))  # nothing to tell
    assert not has_no_space_glyph(simple, resource(subtype="/TrueType"))
    assert not has_no_space_glyph(simple)
