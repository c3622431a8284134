"""llama.cpp's run-time CPU kernels (llm4dsr.llamacpp)."""
from pathlib import Path

from llm4dsr import llamacpp


def test_backend_modules_are_found_where_a_wheel_installs_them(tmp_path):
    package = tmp_path / "site" / "llama_cpp"
    (package / "lib").mkdir(parents=True)
    assert llamacpp.backend_dir(package) is None  # a build that links its backends: used as it is
    (tmp_path / "site" / "bin").mkdir()
    (tmp_path / "site" / "bin" / "libggml-cpu-haswell.so").touch()
    assert llamacpp.backend_dir(package) == tmp_path / "site" / "bin"


def test_the_installed_build_has_a_cpu_backend_after_loading():
    """Whatever the build (plain or GGML_BACKEND_DL with CPU variants), once loaded
    llama.cpp reports the CPU features it uses: a DL build that loaded nothing reports none."""
    module = llamacpp.module()
    assert Path(module.__file__).exists()
    assert "AVX" in llamacpp.system_info() or "NEON" in llamacpp.system_info() or "CPU" in llamacpp.system_info()
