"""The SLURM profile on a real SLURM: the tiny configuration (.test/config.yaml) through
`snakemake --profile workflow/profiles/slurm` on a single-node cluster that
tools/slurm-local.sh installs and starts on this machine (root and apt-get needed, else
skipped). Every job must go through sbatch and finish as a SLURM job, and the outputs must
equal those of the same configuration run locally (conftest.py: tiny_run_of_this_tree,
the run tests/test_e2e.py checked when the default tests ran first on the same tree).

Run with `pytest -m slurm` (.ci/run does, after the default tests). What differs from a
site: no accounting database (job states come from squeue, MinJobAge 600 s keeps finished
jobs there), no GPU (llm.gpus is 0 in the tiny config), and memory requests capped at
the profile's default (the node has less than the 8B sizes of set-resources).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import snakemake_tiny, tiny_workdir

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "slurm-local.sh"
PROFILE = ROOT / "workflow" / "profiles" / "slurm"


@pytest.fixture(scope="module")
def cluster():
    """A running single-node SLURM; stopped afterwards if this fixture started it."""
    if os.geteuid() != 0:
        pytest.skip("needs root: tools/slurm-local.sh installs and starts SLURM")
    if not shutil.which("sbatch") and not shutil.which("apt-get"):
        pytest.skip("no SLURM here and no apt-get to install it")
    was_up = subprocess.run([SCRIPT, "status"], capture_output=True).returncode == 0
    out = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        if not was_up:  # no daemon left behind by a start that failed half-way
            subprocess.run([SCRIPT, "stop"], capture_output=True, timeout=120)
        pytest.fail(out.stdout + out.stderr)
    yield
    if not was_up:
        subprocess.run([SCRIPT, "stop"], check=True, timeout=120)


def profile_resources() -> list[str]:
    """The profile's set-resources as --set-resources arguments, memory capped at its
    default-resources mem_mb (a command-line --set-resources replaces the profile's list,
    so the runtimes are passed on unchanged)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    cap = profile["default-resources"]["mem_mb"]
    return [f"{rule}:{key}={min(value, cap) if key == 'mem_mb' else value}"
            for rule, res in profile["set-resources"].items() for key, value in res.items()]


@pytest.fixture(scope="module")
def slurm_run(cluster, tiny, tmp_path_factory):
    """The tiny configuration through the SLURM profile: (working folder, snakemake's log)."""
    wd = tiny_workdir(tmp_path_factory.mktemp("slurm"), tiny.gguf_path)
    out = snakemake_tiny(wd, "--profile", str(PROFILE),
                         "--slurm-status-command", "squeue",  # no accounting database here: sacct cannot answer
                         "--slurm-init-seconds-before-status-checks", "5",  # tiny jobs: poll sooner than 40 s
                         "--slurm-keep-successful-logs",
                         "--set-resources", *profile_resources())
    return wd, out.stdout + out.stderr


def test_every_job_went_through_sbatch(slurm_run):
    wd, log = slurm_run
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    submitted = dict(re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", log))
    stats = re.search(r"Job stats:\n(.*?)\n\n", log, re.S).group(1)
    counts = {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M) if r not in ("total", "all")}
    by_rule: dict[str, int] = {}
    for path in submitted.values():
        rule = re.search(r"/rule_(\w+)/", path).group(1)
        by_rule[rule] = by_rule.get(rule, 0) + 1
        assert Path(path).is_file(), path  # the job's SLURM log (kept: --slurm-keep-successful-logs)
    assert by_rule == counts  # every job but the target rule `all` (it runs nothing) was an sbatch job
    # SLURM's own record (MinJobAge keeps finished jobs): this run's jobs, all completed
    # on this machine, none asking for a GPU
    states = subprocess.run(["squeue", "--states=all", "--noheader", "--name", run_id, "--format=%i|%T"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert dict(s.split("|") for s in states) == {i: "COMPLETED" for i in submitted}
    for jobid in submitted:
        job = subprocess.run(["scontrol", "-o", "show", "job", jobid], capture_output=True, text=True,
                             check=True).stdout
        assert "gpu" not in job.lower() and f"WorkDir={wd}" in job, job


# Files that differ between any two runs of the same configuration, and why: most record how
# long a step took (or when it ran). Each is compared without what varies; every other file
# byte for byte.
VARIES = {
    r"benchmarks/.+\.tsv": "snakemake's benchmark of each job (seconds, CPU, memory): only its columns are compared",
    r".+/score_stats\.json": "scoring time and speed (seconds, s_per_unit, units_per_s, seconds_suggest)",
    r".+/backbone/.+/seed\d+\.json": "training time and speed (train_seconds, sequences_per_s)",
    r".+/denoise/\w+\.json": "the denoiser's train_seconds, score_seconds and correct_seconds",
    r".+/(results|sweep)\.csv": "the train_seconds_mean column",
    r".+/finetune/.+/loss\.tsv": "the seconds column (time since training started)",
    r".+/finetune/.+/checkpoints/.+/state\.pt": "the checkpoint's loss history holds the same seconds",
    r".+/report/figures/lora_loss\.png": "its title gives the training time in minutes: not compared",
    r".+/report/report\.ipynb": "papermill's run times and the loss figure: cell sources and text outputs compared",
    r".+/report/report(_code)?\.html": "report.ipynb rendered (run times, the loss figure): not compared",
    r".+/adapter/adapter_config\.json": "peft writes target_modules from a set, in the order of Python's "
                                        "per-process string hashing: compared sorted",
}
TIME_KEYS = {"seconds", "s_per_unit", "units_per_s", "seconds_suggest", "train_seconds", "train_seconds_mean",
             "score_seconds", "correct_seconds", "sequences_per_s"}


def untimed(obj):
    """obj without its timing keys, tensors as comparable bytes."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if k not in TIME_KEYS}
    if isinstance(obj, (list, tuple)):
        return [untimed(v) for v in obj]
    if type(obj).__name__ == "Tensor":
        return str(obj.dtype), tuple(obj.shape), obj.cpu().numpy().tobytes()
    return obj


def compared(rel: str, path: Path):
    """What is compared of a VARIES file: its content without timings (None: nothing)."""
    if rel.startswith("benchmarks/"):
        return pd.read_csv(path, sep="\t", nrows=0).columns.tolist()
    if path.name == "adapter_config.json":
        config = json.loads(path.read_text())
        return {**config, "target_modules": sorted(config["target_modules"])}
    if path.suffix == ".json":
        return untimed(json.loads(path.read_text()))
    if path.suffix in (".csv", ".tsv"):
        table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        return table.drop(columns=[c for c in table if c in TIME_KEYS]).to_csv(index=False)
    if path.suffix == ".pt":
        import torch
        return untimed(torch.load(path, map_location="cpu", weights_only=False))
    if path.suffix == ".ipynb":
        return [(cell["source"], [{k: v for k, v in out.get("data", {"text": out.get("text")}).items() if k != "image/png"}
                                  for out in cell.get("outputs", [])]) for cell in json.loads(path.read_text())["cells"]]
    return None


def differences(local: Path, slurm: Path) -> list[str]:
    """The files of two results/ trees that differ (beyond what varies, for VARIES files)."""
    here = {p.relative_to(local).as_posix(): p for p in sorted(local.rglob("*")) if p.is_file()}
    there = {p.relative_to(slurm).as_posix(): p for p in sorted(slurm.rglob("*")) if p.is_file()}
    found = [f"{rel}: only in one run" for rel in sorted(here.keys() ^ there.keys())]
    for rel in sorted(here.keys() & there.keys()):
        varies = [p for p in VARIES if re.fullmatch(p, rel)]
        if varies and compared(rel, here[rel]) != compared(rel, there[rel]):
            found.append(f"{rel}: differs beyond what varies ({VARIES[varies[0]]})")
        elif not varies and here[rel].read_bytes() != there[rel].read_bytes():
            found.append(f"{rel}: differs")
    unused = [p for p in VARIES if not any(re.fullmatch(p, rel) for rel in here)]
    return found + [f"VARIES pattern {p} matches no file" for p in unused]


def test_outputs_equal_the_local_run(slurm_run, tiny_run_of_this_tree):
    """Same configuration, same seed: the SLURM run's results/ equal the local run's."""
    assert not differences(tiny_run_of_this_tree / "results", slurm_run[0] / "results")
