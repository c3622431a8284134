import copy
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (tiny_llm, denoise_synth)
ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / ".test" / "config.yaml"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny random Llama (tests/tiny_llm.py) as a GGUF file, built once per session."""
    from tiny_llm import make_tiny_gguf

    from llm4dsr.llm import resolve

    return resolve(str(make_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")))


@pytest.fixture(scope="session")
def tiny_torch(tiny):
    """A function returning (a fresh copy of the tiny model in torch, its tokenizer): the
    GGUF is read into torch once (seconds); a copy costs a fraction of a second."""
    from llm4dsr.llm import load_torch

    model, tok = load_torch(tiny)

    def fresh():
        return copy.deepcopy(model), tok

    return fresh


def tiny_workdir(wd: Path, gguf: Path) -> Path:
    """A fresh working folder for the tiny configuration (.test/config.yaml): the config,
    and the tiny model linked in where the config expects it."""
    (wd / "config.yaml").write_text(TINY_CONFIG.read_text())
    model = wd / yaml.safe_load(TINY_CONFIG.read_text())["llm"]["base_model"]
    model.parent.mkdir(parents=True)
    os.symlink(gguf, model)
    return wd


def snakemake_tiny(wd: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """snakemake on the repository's Snakefile in wd; fails the test with the log's tail."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(wd), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-6000:]
    return out


# what a local tiny run reads (not the profiles: it names none)
RUN_INPUTS = ["Snakefile", "workflow", ":(exclude)workflow/profiles", "src", "notebooks", ".test", "tests/tiny_llm.py"]


def tree_stamp(gguf: Path) -> str:
    """A fingerprint of what the tiny run depends on: the files of RUN_INPUTS that git would
    commit (tracked, or untracked and not ignored), the tiny model and the interpreter."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z", "--", *RUN_INPUTS], cwd=ROOT,
                            capture_output=True)
    digest = hashlib.sha256(sys.executable.encode() + Path(gguf).read_bytes())
    for name in sorted(listed.stdout.split(b"\0")) if listed.returncode == 0 else []:
        if name and (ROOT / name.decode()).is_file():
            digest.update(name + (ROOT / name.decode()).read_bytes())
    return digest.hexdigest() if listed.returncode == 0 else "no git: never reused"


def local_tiny_run(tiny, request, reuse: bool) -> Path:
    """The tiny configuration run to the end under `snakemake --cores 2` in .pytest_cache/d/tiny_run,
    stamped with tree_stamp. reuse: return the folder as it is when its stamp is this tree's
    (a run of the same code and configuration), rather than run it again."""
    wd = Path(request.config.cache.mkdir("tiny_run"))
    stamp = tree_stamp(tiny.gguf_path)
    if reuse and (wd / "stamp").is_file() and (wd / "stamp").read_text() == stamp:
        return wd
    shutil.rmtree(wd)
    wd.mkdir()
    snakemake_tiny(tiny_workdir(wd, tiny.gguf_path), "--cores", "2", "--show-failed-logs")
    (wd / "stamp").write_text(stamp)
    return wd


@pytest.fixture(scope="session")
def tiny_run(tiny, request):
    """The tiny configuration run to the end under `snakemake --cores 2`, in a fresh folder
    (tests/test_e2e.py checks it)."""
    return local_tiny_run(tiny, request, reuse=False)


@pytest.fixture(scope="session")
def tiny_run_of_this_tree(tiny, request):
    """The local tiny run that tiny_run left for this very tree (e.g. `pytest -q` before
    `pytest -q -m slurm`, as in .ci/run), else a fresh one (tests/test_slurm.py compares with it)."""
    return local_tiny_run(tiny, request, reuse=True)
