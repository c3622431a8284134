"""llama-cpp-python, with llama.cpp's CPU kernels chosen at run time and proved to run.

setup.sh builds llama.cpp with GGML_BACKEND_DL and GGML_CPU_ALL_VARIANTS: its CPU code
is compiled once per x86-64 feature level (SSE4.2, AVX, AVX2, AVX-512, AVX-512 VNNI,
AMX, ...) into separate modules (``libggml-cpu-<variant>.so``). ggml would load the one
whose CPU features score highest, but a feature the CPU lists is not always one that
runs: on Intel Sapphire Rapids under KVM the ``sapphirerapids`` module dies with SIGILL
on its first decode. So the choice is proved, not assumed: each variant, best score
first, decodes a tiny model in a child process (:func:`probe`) until one survives; a
variant that dies is excluded and the next one is tried, down to the plain ``x64``.
The result is cached per machine (CPU flags, kernel, build) in the virtualenv, so only
the first process on a new kind of node pays for it (about a second); setup.sh runs it.

``LLM4DSR_CPU_KERNELS=<variant>`` (or the config key ``llm.cpu_kernels``) forces a
variant, ``auto`` (the default) probes. A build without modules (an older setup, a GPU
build that links its backends) is used as it is.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .io import Llm4dsrError

log = logging.getLogger(__name__)

ENV = "LLM4DSR_CPU_KERNELS"
CACHE_NAME = "llm4dsr-cpu-kernels.json"
PROBE_TIMEOUT_S = 300
CPU_PREFIX = "libggml-cpu-"
CPUINFO = Path("/proc/cpuinfo")
USED: "Choice | None" = None  # the variant this process loaded (None: none yet, or a linked build)


def backend_dir(package: Path) -> Path | None:
    """The folder of a GGML_BACKEND_DL build's CPU modules (libggml-cpu-<variant>.so), if any."""
    for folder in (package / "lib", package.parent / "bin", package.parent / "lib"):
        if folder.is_dir() and any(folder.glob(f"{CPU_PREFIX}*.so")):
            return folder
    return None


def variants(folder: Path) -> dict[str, Path]:
    """The CPU variants of a build: name -> module file."""
    return {p.name[len(CPU_PREFIX):-3]: p for p in sorted(folder.glob(f"{CPU_PREFIX}*.so"))}


def installed_variants() -> dict[str, Path] | None:
    """The CPU variants of the installed llama-cpp-python, found without importing it;
    None for a build without run-time variants (or none installed)."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    folder = backend_dir(Path(spec.origin).parent)
    return None if folder is None else variants(folder)


@dataclass
class Choice:
    """The CPU variant a process uses, and why the better-scored ones are not used."""

    variant: str
    excluded: dict[str, str] = field(default_factory=dict)  # variant -> reason
    how: str = "probed"  # probed | cached | forced

    def line(self) -> str:
        why = "; ".join(f"{v} excluded: {r}" for v, r in self.excluded.items())
        return f"llama.cpp CPU kernels: {self.variant}" + (f" ({why})" if why else "") + f" [{self.how}]"


# -- what identifies a machine and a build ------------------------------------------------

def machine_key(folder: Path) -> str:
    """Changes when the CPU's flags, the kernel or any module of the build changes."""
    cpu = ""
    try:
        text = CPUINFO.read_text()
        # the first processor's vendor, model and flags (all cores of a node are alike)
        cpu = "\n".join(re.findall(r"^(?:vendor_id|model name|flags|Features)\s*:.*$", text, re.M)[:4])
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine()
    build = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
             for p in sorted(folder.glob("libggml*.so*")) + sorted(folder.glob("libllama*.so*"))]
    text = "\n".join([cpu, platform.system(), platform.release(), *build])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_paths() -> list[Path]:
    """Where the choice is kept: the virtualenv, else the user's cache folder."""
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm4dsr"
    return [Path(sys.prefix) / CACHE_NAME, user / CACHE_NAME]


def read_cache(paths: list[Path], key: str) -> Choice | None:
    for path in paths:
        try:
            entry = json.loads(path.read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("variant"), str):
            return Choice(entry["variant"], dict(entry.get("excluded") or {}), "cached")
    return None


def write_cache(paths: list[Path], key: str, choice: Choice) -> None:
    """Adds this machine's entry (one file serves every kind of node sharing the virtualenv);
    written to a temporary name and renamed, so concurrent jobs never read half a file."""
    for path in paths:
        try:
            try:
                entries = json.loads(path.read_text())
                entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError):
                entries = {}
            entries[key] = {"variant": choice.variant, "excluded": choice.excluded}
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
            return
        except OSError:
            continue
    log.warning("llama.cpp CPU kernels: could not cache the probe's result (%s); every process will probe",
                ", ".join(str(p) for p in paths))


# -- ranking and probing, each in a child process -------------------------------------------

def _child(args: list[str], timeout: float = PROBE_TIMEOUT_S) -> tuple[int | None, str]:
    """Runs ``python -m llm4dsr.llamacpp ARGS``; (exit code, or None on time-out; output)."""
    try:
        res = subprocess.run([sys.executable, "-m", "llm4dsr.llamacpp", *args], capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, ""
    return res.returncode, res.stdout + res.stderr


def describe_failure(code: int | None, output: str, step: str = "probe") -> str:
    """'SIGILL in probe', 'exit 1 in probe: <last line>', 'time-out in probe'."""
    if code is None:
        return f"time-out in {step}"
    if code < 0:
        try:
            return f"{signal.Signals(-code).name} in {step}"
        except ValueError:
            return f"signal {-code} in {step}"
    last = (output.strip().splitlines() or ["?"])[-1]
    return f"exit {code} in {step}: {last[:120]}"


def scores(folder: Path) -> dict[str, int]:
    """ggml's score of each variant on this CPU (0: features missing), read in a child
    (loading a module runs its initialisers, which a crashing module must not run here)."""
    code, out = _child(["--scores", str(folder)], timeout=60)
    found = re.search(r"^SCORES (.*)$", out, re.M)
    if code != 0 or not found:
        raise Llm4dsrError(f"{folder}: could not read llama.cpp's CPU variant scores "
                           f"({describe_failure(code, out, 'scoring')})")
    return json.loads(found.group(1))


def probe(path: Path) -> str | None:
    """None if the variant in ``path`` decodes a tiny model in a child process, else why not."""
    code, out = _child(["--probe", str(path)])
    return None if code == 0 and "PROBE OK" in out else describe_failure(code, out)


def choose(folder: Path, score_of: Callable[[Path], dict[str, int]] = scores,
           probe_of: Callable[[Path], str | None] = probe) -> Choice:
    """The best-scored variant that survives its probe; those that die are excluded."""
    ranked = sorted(((s, v) for v, s in score_of(folder).items() if s > 0), reverse=True)
    found = variants(folder)
    excluded: dict[str, str] = {}
    for _, name in ranked:
        reason = probe_of(found[name])
        if reason is None:
            return Choice(name, excluded)
        excluded[name] = reason
    why = "; ".join(f"{v}: {r}" for v, r in excluded.items()) or "no variant supports this CPU"
    raise Llm4dsrError(f"{folder}: no llama.cpp CPU kernel runs on this machine ({why}); rebuild with ./setup.sh")


def resolve_choice(folder: Path, forced: str | None = None, cache: list[Path] | None = None,
                   score_of=scores, probe_of=probe) -> Choice:
    """The forced variant, the cached choice for this machine and build, or a new probe."""
    forced = forced if forced is not None else os.environ.get(ENV, "auto")
    found = variants(folder)
    if forced and forced != "auto":
        if forced not in found:
            raise Llm4dsrError(f"{ENV}={forced}: no such llama.cpp CPU variant in {folder} "
                               f"(known: auto, {', '.join(found)})")
        return Choice(forced, how="forced")
    cache = cache_paths() if cache is None else cache
    key = machine_key(folder)
    cached = read_cache(cache, key)
    if cached is not None and cached.variant in found:
        return cached
    choice = choose(folder, score_of, probe_of)
    write_cache(cache, key, choice)
    return choice


# -- the process's own loading ------------------------------------------------------------

def _ggml():
    # by soname: the libggml that libllama already loaded (a wheel holds copies, not
    # symlinks, of libggml.so and libggml.so.0; another copy has its own registry)
    ggml = ctypes.CDLL("libggml.so.0")
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    return ggml


@functools.cache
def module():
    """The imported ``llama_cpp``, its backends loaded: the proved CPU variant, and any
    other backend module of the build (a GPU one) as ggml would load it."""
    import llama_cpp

    folder = backend_dir(Path(llama_cpp.__file__).parent)
    if folder is None:
        return llama_cpp
    choice = resolve_choice(folder)
    ggml = _ggml()
    for other in sorted(folder.glob("libggml-*.so")):  # GPU backends first, as ggml orders them
        if not other.name.startswith(CPU_PREFIX) and other.name != "libggml-base.so":
            ggml.ggml_backend_load(str(other).encode())
    chosen = variants(folder)[choice.variant]
    if not ggml.ggml_backend_load(str(chosen).encode()):
        raise Llm4dsrError(f"{chosen}: llama.cpp refused to load this CPU variant "
                           f"(not supported by this CPU?); set {ENV}=auto")
    log.info("%s", choice.line())
    global USED
    USED = choice
    return llama_cpp


def system_info() -> str:
    """What llama.cpp uses on this machine (its CPU features, as llama_print_system_info says)."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()


# -- what the child processes run --------------------------------------------------------

def _print_scores(folder: Path) -> None:
    import llama_cpp  # noqa: F401  (loads libggml-base, which every module links to)

    out = {}
    for name, path in variants(folder).items():
        lib = ctypes.CDLL(str(path))
        lib.ggml_backend_score.restype = ctypes.c_int
        out[name] = int(lib.ggml_backend_score())
    print("SCORES " + json.dumps(out), flush=True)


def write_probe_model(path: Path, seed: int = 0) -> Path:
    """A one-layer random Llama with a 259-token byte vocabulary, as F32 GGUF: shapes that
    the K-quants accept (rows of 256), so it can be quantized to every type the study uses."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    hidden, ffn, heads, kv_heads, vocab = 256, 512, 4, 2, 259
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("llm4dsr-probe")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(1)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(vocab)
    w.add_file_type(0)
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([2, 3, 3] + [6] * 256)  # unknown, control, control, bytes
    kv = hidden // heads * kv_heads
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,),
              "blk.0.attn_norm.weight": (hidden,), "blk.0.ffn_norm.weight": (hidden,),
              "blk.0.attn_q.weight": (hidden, hidden), "blk.0.attn_k.weight": (kv, hidden),
              "blk.0.attn_v.weight": (kv, hidden), "blk.0.attn_output.weight": (hidden, hidden),
              "blk.0.ffn_gate.weight": (ffn, hidden), "blk.0.ffn_up.weight": (ffn, hidden),
              "blk.0.ffn_down.weight": (hidden, ffn)}
    for name, shape in shapes.items():
        arr = np.ones(shape, np.float32) if len(shape) == 1 else rng.normal(0, 0.5, shape).astype(np.float32)
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# llama.cpp file types the study runs: F32 (tests, LoRA), F16 (merged export), Q8_0
# (rehearsal), Q4_1 (SmolLM2), Q4_K_M (Gemma-3 and the default quantization)
PROBE_FTYPES = {"F32": 0, "F16": 1, "Q8_0": 7, "Q4_1": 3, "Q4_K_M": 15}


def _probe_here(path: Path) -> None:
    """Load only the variant in ``path``, then prefill and decode with each file type on two
    threads (the matrix-matrix and matrix-vector kernels). Dies where the variant would."""
    import llama_cpp

    if not _ggml().ggml_backend_load(str(path).encode()):
        sys.exit(f"{path}: ggml refused to load it")
    with tempfile.TemporaryDirectory() as tmp:
        f32 = write_probe_model(Path(tmp) / "F32.gguf")
        for qtype, ftype in PROBE_FTYPES.items():
            model = f32
            if qtype != "F32":
                model = Path(tmp) / f"{qtype}.gguf"
                params = llama_cpp.llama_model_quantize_default_params()
                params.ftype = ftype
                params.nthread = 2
                if llama_cpp.llama_model_quantize(str(f32).encode(), str(model).encode(), params) != 0:
                    sys.exit(f"quantization to {qtype} failed")
            llm = llama_cpp.Llama(model_path=str(model), n_ctx=128, n_batch=64, n_threads=2, verbose=False)
            llm.eval(list(range(3, 67)))  # a 64-token prefill
            llm.eval([70])  # one decode step; surviving is what the probe proves
            del llm
    print("PROBE OK", flush=True)


def main(argv: list[str] | None = None) -> int:
    """python -m llm4dsr.llamacpp [--probe MODULE | --scores FOLDER]: without arguments,
    choose (probing where no cached choice fits this machine) and print the choice."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--probe":
        _probe_here(Path(args[1]))
        return 0
    if len(args) == 2 and args[0] == "--scores":
        _print_scores(Path(args[1]))
        return 0
    if args:
        sys.exit(main.__doc__)
    import llama_cpp

    folder = backend_dir(Path(llama_cpp.__file__).parent)
    if folder is None:
        print("llama.cpp CPU kernels: linked into the build (no run-time variants)")
        return 0
    try:
        print(resolve_choice(folder).line())
    except Llm4dsrError as exc:
        sys.exit(f"error: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
