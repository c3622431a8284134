"""llama.cpp's run-time CPU kernels (llm4dsr.llamacpp): the variant a process uses is one
that survived a probe, whatever the machine."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llm4dsr import llamacpp
from llm4dsr.io import Llm4dsrError


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


def _fake_build(tmp_path, names=("sapphirerapids", "zen4", "haswell", "x64")):
    folder = tmp_path / "lib"
    folder.mkdir()
    for name in names:
        (folder / f"libggml-cpu-{name}.so").write_bytes(name.encode())
    return folder


SCORES = {"sapphirerapids": 100, "zen4": 60, "haswell": 20, "x64": 1}


def _dies_by_sigill(path):
    """A real child process killed by SIGILL, as the sapphirerapids module's decode is."""
    res = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"])
    return llamacpp.describe_failure(res.returncode, "")


def test_a_variant_whose_probe_dies_by_a_signal_is_skipped_for_the_next_best(tmp_path):
    folder = _fake_build(tmp_path)
    probed = []

    def probe(path):
        probed.append(path.name)
        return _dies_by_sigill(path) if "sapphirerapids" in path.name else None

    choice = llamacpp.choose(folder, lambda _: dict(SCORES, unsupported=0), probe)
    assert choice.variant == "zen4"
    assert choice.excluded == {"sapphirerapids": "SIGILL in probe"}
    assert probed == ["libggml-cpu-sapphirerapids.so", "libggml-cpu-zen4.so"]  # best first, stops at a survivor
    assert choice.line().startswith("llama.cpp CPU kernels: zen4 (sapphirerapids excluded: SIGILL in probe)")


def test_every_variant_dying_is_a_one_line_error(tmp_path):
    folder = _fake_build(tmp_path, ("haswell", "x64"))
    with pytest.raises(Llm4dsrError, match="no llama.cpp CPU kernel runs on this machine.*haswell: SIGILL"):
        llamacpp.choose(folder, lambda _: {"haswell": 20, "x64": 1}, _dies_by_sigill)


def test_on_a_machine_where_every_variant_works_the_best_scored_is_chosen(tmp_path):
    folder = _fake_build(tmp_path)
    assert llamacpp.choose(folder, lambda _: SCORES, lambda _: None).variant == "sapphirerapids"


def test_the_cached_choice_is_used_until_the_cpu_or_the_build_changes(tmp_path, monkeypatch):
    folder = _fake_build(tmp_path)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("vendor_id\t: GenuineIntel\nflags\t\t: avx2 avx512f amx_tile\n")
    monkeypatch.setattr(llamacpp, "CPUINFO", cpuinfo)
    cache = [tmp_path / "venv" / "cache.json"]
    probes = []

    def probe(path):
        probes.append(path.name)
        return "SIGILL in probe" if "sapphirerapids" in path.name else None

    def resolve():
        return llamacpp.resolve_choice(folder, "auto", cache, lambda _: SCORES, probe)

    first = resolve()
    assert (first.variant, first.how, len(probes)) == ("zen4", "probed", 2)
    entry = json.loads(cache[0].read_text())
    assert list(entry.values()) == [{"variant": "zen4", "excluded": {"sapphirerapids": "SIGILL in probe"}}]
    again = resolve()
    assert (again.variant, again.how, again.excluded, len(probes)) == ("zen4", "cached", first.excluded, 2)

    (folder / "libggml-cpu-zen4.so").write_bytes(b"rebuilt, another size")  # a new build
    assert resolve().how == "probed" and len(probes) == 4
    assert resolve().how == "cached" and len(probes) == 4

    cpuinfo.write_text("vendor_id\t: AuthenticAMD\nflags\t\t: avx2 avx512f\n")  # another node
    assert resolve().how == "probed" and len(probes) == 6
    assert len(json.loads(cache[0].read_text())) == 3  # one entry per machine and build


def test_an_unwritable_cache_falls_back_to_the_next_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = [blocker / "sub" / "cache.json", tmp_path / "user" / "cache.json"]
    llamacpp.write_cache(cache, "k", llamacpp.Choice("zen4"))
    assert llamacpp.read_cache(cache, "k").variant == "zen4"
    assert llamacpp.read_cache(cache, "other") is None


def test_a_forced_variant_is_used_without_probing_and_an_unknown_one_is_a_clear_error(tmp_path, monkeypatch):
    folder = _fake_build(tmp_path)

    def never(_):
        raise AssertionError("a forced variant is not probed")

    monkeypatch.setenv(llamacpp.ENV, "x64")
    choice = llamacpp.resolve_choice(folder, cache=[tmp_path / "c.json"], score_of=never, probe_of=never)
    assert (choice.variant, choice.how) == ("x64", "forced")
    with pytest.raises(Llm4dsrError, match=r"LLM4DSR_CPU_KERNELS=avx9: no such llama.cpp CPU variant .*known: auto, haswell"):
        llamacpp.resolve_choice(folder, "avx9", [tmp_path / "c.json"], never, never)


def test_a_real_module_that_dies_in_its_probe_is_excluded_and_the_real_best_is_used(tmp_path):
    """The whole path with real child processes: the installed build's modules beside a fake
    variant that scores above them all and executes an illegal instruction when ggml
    initialises it (ud2, SIGILL on x86-64; a trap elsewhere)."""
    import llama_cpp

    real = llamacpp.backend_dir(Path(llama_cpp.__file__).parent)
    if real is None or shutil.which("cc") is None:
        pytest.skip("needs a GGML_BACKEND_DL build and a C compiler")
    folder = tmp_path / "lib"
    folder.mkdir()
    for module in real.glob("libggml-cpu-*.so"):
        (folder / module.name).symlink_to(module)
    source = tmp_path / "fake.c"
    source.write_text("int ggml_backend_score(void) { return 1 << 20; }\n"
                      "void *ggml_backend_init(void) { __builtin_trap(); return 0; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(folder / "libggml-cpu-zzfake.so"), str(source)], check=True)

    choice = llamacpp.resolve_choice(folder, "auto", [tmp_path / "cache.json"])
    assert choice.variant != "zzfake" and choice.variant in llamacpp.variants(real)
    assert choice.excluded["zzfake"] in ("SIGILL in probe", "SIGTRAP in probe")
    expected = llamacpp.resolve_choice(real, "auto", [tmp_path / "real.json"])  # the same without the fake
    assert choice.variant == expected.variant
