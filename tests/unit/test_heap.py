"""The process's heap: huge pages asked of torch only where the kernel offers them and the
environment has not decided; one memory-heavy step at a time."""

from __future__ import annotations

import pytest

from tasks.core import heap
from tasks.core.heap import (
    ONEDNN_CACHE,
    ONEDNN_CACHE_ENTRIES,
    TORCH_THP,
    advise_huge_pages_to_torch,
    bound_onednn_kernel_cache,
    heavy_step,
    thp_mode,
)


def kernel(tmp_path, text: str | None):
    """A stand-in for the kernel's mode file (``None``: no such file)."""
    path = tmp_path / "enabled"
    if text is not None:
        path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "mode"), [
    ("always [madvise] never\n", "madvise"),
    ("[always] madvise never\n", "always"),
    ("always madvise [never]\n", "never"),
    ("garbled\n", None),
    (None, None),  # no such file: another OS, a kernel without huge pages
])
def test_the_kernel_mode_is_the_bracketed_one(tmp_path, text, mode):
    assert thp_mode(kernel(tmp_path, text)) == mode


@pytest.mark.parametrize("text", ["[always] madvise never", "always [madvise] never"])
def test_torch_is_asked_for_huge_pages_where_the_kernel_gives_them(tmp_path, text):
    environ: dict[str, str] = {}
    assert advise_huge_pages_to_torch(environ, kernel(tmp_path, text))
    assert environ == {TORCH_THP: "1"}


@pytest.mark.parametrize("text", ["always madvise [never]", None])
def test_nothing_is_asked_where_the_kernel_has_no_huge_pages(tmp_path, text):
    environ: dict[str, str] = {}
    assert not advise_huge_pages_to_torch(environ, kernel(tmp_path, text))
    assert environ == {}


@pytest.mark.parametrize("setting", ["0", "1"])
def test_a_setting_in_the_environment_is_kept(tmp_path, setting):
    environ = {TORCH_THP: setting}
    assert not advise_huge_pages_to_torch(environ, kernel(tmp_path, "always [madvise] never"))
    assert environ == {TORCH_THP: setting}


def test_a_heavy_step_is_held_until_it_ends_even_by_an_error():
    with pytest.raises(RuntimeError):
        with heavy_step():
            assert heap._HEAVY_STEP.locked()  # another thread's step would wait here
            raise RuntimeError("a model batch failed")
    assert not heap._HEAVY_STEP.locked()
    with heavy_step():  # the next step is not blocked by the one that failed
        pass


def test_onednn_keeps_a_bounded_number_of_kernels():
    environ: dict[str, str] = {}
    assert bound_onednn_kernel_cache(environ)
    assert environ == {ONEDNN_CACHE: str(ONEDNN_CACHE_ENTRIES)}


@pytest.mark.parametrize("setting", ["0", "1024"])
def test_the_environments_kernel_cache_setting_is_kept(setting):
    environ = {ONEDNN_CACHE: setting}
    assert not bound_onednn_kernel_cache(environ)
    assert environ == {ONEDNN_CACHE: setting}
