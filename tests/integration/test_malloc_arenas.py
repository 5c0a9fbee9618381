"""glibc's heaps (arenas): the ``ingest`` process's threads share two, as set at its start."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tasks.core.heap import MALLOC_ARENAS

pytestmark = [pytest.mark.integration, pytest.mark.once]

# Eight threads alive at once, each allocating (none ends before the others have allocated,
# so none inherits a heap an ended thread left), then glibc's own report of its heaps.
_PROBE = textwrap.dedent("""
    import ctypes, os, sys, tempfile, threading
    from tasks.core.heap import limit_malloc_arenas
    if sys.argv[1] == "limit":
        assert limit_malloc_arenas()
    libc = ctypes.CDLL("libc.so.6")
    libc.fdopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    barrier = threading.Barrier(8)
    def work():
        held = [bytearray(64 * 1024) for _ in range(32)]  # below glibc's mmap threshold
        barrier.wait()
        del held
    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads: thread.start()
    for thread in threads: thread.join()
    with tempfile.TemporaryFile() as report:
        stream = libc.fdopen(os.dup(report.fileno()), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        report.seek(0)
        print(report.read().decode().count("<heap nr="))
""")


def heaps(mode: str, env: dict[str, str]) -> int:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          env=env, timeout=120, check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heaps")
def test_threads_share_the_set_number_of_heaps():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert heaps("limit", env) <= MALLOC_ARENAS
    assert heaps("default", env) > MALLOC_ARENAS  # what the limit changes: a heap per thread


def test_the_environment_setting_is_kept():
    from tasks.core.heap import limit_malloc_arenas

    assert not limit_malloc_arenas({"MALLOC_ARENA_MAX": "8"})
