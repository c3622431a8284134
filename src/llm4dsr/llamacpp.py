"""llama-cpp-python, with llama.cpp's CPU kernels chosen at run time.

setup.sh builds llama.cpp with GGML_BACKEND_DL and GGML_CPU_ALL_VARIANTS: its CPU code
is compiled once per x86-64 feature level (SSE4.2, AVX, AVX2, AVX-512, AVX-512 VNNI,
AMX, ...) into separate modules, and ggml loads the best one this machine supports, so
one portable build runs every node of a cluster at that node's speed. Such a build
registers no backend by itself: :func:`module` loads the modules once per process. A
build without modules (an older setup, a GPU build that links its backends) is used as
it is.
"""
from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def backend_dir(package: Path) -> Path | None:
    """The folder of a GGML_BACKEND_DL build's CPU modules (libggml-cpu-<variant>.so), if any."""
    for folder in (package / "lib", package.parent / "bin", package.parent / "lib"):
        if folder.is_dir() and any(folder.glob("libggml-cpu-*.so")):
            return folder
    return None


@functools.cache
def module():
    """The imported ``llama_cpp``, its backends loaded."""
    import llama_cpp

    package = Path(llama_cpp.__file__).parent
    folder = backend_dir(package)
    if folder is not None:
        # by soname: the libggml that libllama already loaded (a wheel holds copies, not
        # symlinks, of libggml.so and libggml.so.0; another copy has its own registry)
        ggml = ctypes.CDLL("libggml.so.0")
        ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        ggml.ggml_backend_load_all_from_path(str(folder).encode())
        log.info("llama.cpp CPU kernels: %s", system_info())
    return llama_cpp


def system_info() -> str:
    """What llama.cpp uses on this machine (its CPU features, as llama_print_system_info says)."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
