"""The workflow as a whole: the SLURM profile's dry run, the linter, and the report end
(threshold sweep -> backbones -> sweep table -> report notebook -> snakemake --report)
on a synthetic results tree.

No sbatch/sinfo stubs are needed: a dry run never starts the executor plugin, it only
parses the profile (which needs the plugin installed) and prints each job's resources.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import report_synth
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> str:
    out = subprocess.run([*SNAKEMAKE, "-d", str(workdir), *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def job_resources(dry_run: str) -> dict[str, list[str]]:
    """rule name -> the resources line of each of its jobs in a dry run's output."""
    found: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule )", dry_run):
        head = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if head and res:
            found.setdefault(head.group(1), []).append(res.group(1))
    return found


@pytest.mark.parametrize("gpus", [1, 0])
def test_slurm_dry_run_places_gpu_jobs(tmp_path, gpus):
    """The profile asks for llm.gpus GPUs for the LLM jobs (paper.yaml: 1; 0 on a cluster
    without GPUs, as tests/test_slurm.py runs it) and none for the others."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["llm"]["gpus"] = gpus
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))  # fresh: every job listed
    out = snakemake(tmp_path, "--profile", str(ROOT / "workflow" / "profiles" / "slurm"), "-n")
    assert "Using profile" in out and "profiles/slurm" in out
    res = job_resources(out)
    for rule in ("finetune", "score", "score_selfsup", "embed_items"):
        assert res[rule] and all(f"gpu={gpus}" in r and "runtime=" in r and "mem_mb=" in r for r in res[rule]), rule
    for rule in ("backbone", "correct", "correct_sweep", "report", "data"):
        assert res[rule] and not any("gpu=1" in r for r in res[rule]), rule
    assert all("mem_mb=" in r and "runtime=" in r for rs in res.values() for r in rs)


def test_jobs_on_identical_windows_copy_one_training(tmp_path):
    """clean in every noise setting and noisy at rate 0 train on the same windows: one job
    per model trains (clean of the first setting), the others copy its runs."""
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    out = snakemake(tmp_path, "-n", "--cores", "2")
    inputs = {}
    for block in re.split(r"\n(?=(?:local)?rule )", out):
        if block.startswith("rule backbone:"):
            job = re.search(r"output: (\S+?)/seed", block).group(1).split("results/ml-latest-small/")[1]
            inputs[job] = re.search(r"input: (.*)", block).group(1)
    first = "uniform-0.0/backbone/sasrec/clean"
    assert "backbone/" not in inputs[first]
    for job in ("uniform-0.0/backbone/sasrec/noisy", "uniform-0.2/backbone/sasrec/clean"):
        assert f"{first}/seed0.json" in inputs[job], job
    for job in ("uniform-0.2/backbone/sasrec/noisy", "uniform-0.2/backbone/sasrec/llm4dsr"):
        assert "backbone/" not in inputs[job], job


def test_lint_is_clean():
    out = subprocess.run([*SNAKEMAKE, "-d", str(ROOT), "--lint"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Congratulations" in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """The report end of the workflow on a synthetic tree: everything upstream of the
    sweep's corrections is taken as given (--allowed-rules), so only it, its backbones,
    the sweep table and the report run."""
    wd = tmp_path_factory.mktemp("wf")
    noises = ("uniform-0.0", "uniform-0.1", "popularity-0.1")
    top = report_synth.build(wd / "results", noises=noises)
    (top / "uniform-0.1" / "sweep.csv").unlink()  # the sweep is what this run must make
    for runs in top.glob("uniform-0.1/backbone/*/llm4dsr-p*"):
        shutil.rmtree(runs)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["datasets"] = {"synth": {"source": "local", "interactions": "none.csv", "items": "none.csv"}}
    (wd / "none.csv").write_text("")  # the data rule does not run here, but the config names a file that exists
    cfg["noise"]["settings"] = list(noises)
    cfg["denoise"] = {"methods": []}  # this tree has no denoiser outputs; fixture denoise_run tests them
    cfg["backbone"].update(models=["sasrec", "gru4rec"], conditions=["clean", "noisy", "llm4dsr", "popularity"],
                           seeds=[0], hidden=8, max_epochs=2, patience=1)
    cfg["report"] = {"noise": "uniform-0.1", "threshold_sweep": [0, 90], "sweep_models": ["sasrec"], "examples": 3}
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    allowed = ["--allowed-rules", "correct_sweep", "backbone", "sweep_table", "report"]
    target = "results/synth/report/report.html"
    out = snakemake(wd, target, "--cores", "2", *allowed)  # the target first: --allowed-rules takes a list
    snakemake(wd, target, "--report", "snakemake_report.html", *allowed)
    return wd, top, out


def test_sweep_conditions_are_corrected_and_trained(report_run):
    wd, top, out = report_run
    changes = {t: pd.read_parquet(top / "uniform-0.1" / "correct" / f"llm4dsr-p{t}" / "changes.parquet")
               for t in (0, 90)}
    assert len(changes[0]) > len(changes[90]) > 0  # a lower threshold corrects more
    sweep = pd.read_csv(top / "uniform-0.1" / "sweep.csv")
    assert set(sweep["condition"]) == {"noisy", "llm4dsr-p0", "llm4dsr-p90"} and set(sweep["model"]) == {"sasrec", "mostpop"}
    assert (top / "uniform-0.1" / "backbone" / "sasrec" / "llm4dsr-p0" / "seed0.json").exists()


def test_report_rule_writes_notebook_html_and_figures(report_run):
    wd, top, _ = report_run
    out = top / "report"
    assert (out / "report.ipynb").exists() and (out / "detection.csv").exists()
    html = (out / "report.html").read_text()
    assert "<script src=" not in html
    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"detection_quality", "calibration", "ndcg_bars", "threshold", "noise_rate", "lora_loss",
            "examples", "detection_curves_uniform-0.1", "detection_curves_popularity-0.1"} == names
    assert (wd / "logs" / "report" / "synth.log").exists()


def test_snakemake_report_holds_the_figures(report_run):
    wd, _, _ = report_run
    page = (wd / "snakemake_report.html").read_text()
    for name in ("threshold.png", "examples.png", "report.html", "detection.csv", "sweep.csv"):
        assert name in page, name


@pytest.fixture(scope="module")
def denoise_run(tmp_path_factory):
    """Rule denoise end to end on a synthetic tree: HSD and STEAM fitted (tiny settings),
    their scores joining detection.json, their windows trained as conditions (FMLP-Rec
    among the backbones), their own recommenders in results.csv."""
    wd = tmp_path_factory.mktemp("denoise")
    top = report_synth.build(wd / "results", noises=("uniform-0.1",))
    base = top / "uniform-0.1"
    for name in ("detection.json", "results.csv", "results.md"):
        (base / name).unlink()
    shutil.rmtree(base / "backbone")
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["datasets"] = {"synth": {"source": "local", "interactions": "none.csv", "items": "none.csv"}}
    (wd / "none.csv").write_text("")  # the data rule does not run here, but the config names a file that exists
    cfg["noise"]["settings"] = ["uniform-0.1"]
    tiny = {"hidden": 8, "batch_size": 32, "max_epochs": 2, "patience": 1}
    cfg["denoise"] = {"methods": ["hsd", "steam"], "hsd": tiny, "steam": tiny}
    cfg["backbone"].update(models=["fmlprec"], conditions=["noisy", "hsd", "steam"], seeds=[0], hidden=8,
                           max_epochs=2, patience=1)
    cfg["report"] = {"noise": "uniform-0.1", "threshold_sweep": [], "sweep_models": ["fmlprec"], "examples": 3}
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = [f"results/synth/uniform-0.1/{name}" for name in ("detection.json", "results.md")]
    allowed = ["--allowed-rules", "denoise", "detection_metrics", "backbone", "backbone_table"]
    out = snakemake(wd, *targets, "--cores", "2", *allowed)
    return wd, base, out


def test_denoise_rule_feeds_detection_backbones_and_results(denoise_run):
    wd, base, out = denoise_run
    windows = pd.read_parquet(base / "windows.parquet")
    detection = json.loads((base / "detection.json").read_text())
    for name in ("hsd", "steam"):
        corrected = pd.read_parquet(base / "correct" / name / "windows.parquet")
        assert list(corrected.columns) == list(windows.columns) and len(corrected) == len(windows)
        held = windows["split"] != "train"
        assert (corrected["target"] == windows["target"]).all() and held.any()
        changes = pd.read_parquet(base / "correct" / name / "changes.parquet")
        assert {"op", "window", "was_noise"} <= set(changes.columns)
        assert detection[name]["test"]["items"] > 0 and "roc_auc" in detection[name]["train"]
        result = json.loads((base / "denoise" / f"{name}.json").read_text())
        assert set(result["test"]) == {f"{m}@{k}" for m in ("hr", "ndcg") for k in (5, 10, 20)}
        assert result["train_seconds"] > 0 and result["condition"] == name
        ranks = pd.read_parquet(base / "denoise" / f"{name}.ranks.parquet")
        assert list(ranks.columns) == ["window", "user", "rank"] and len(ranks) == result["n_test"]
        assert (wd / "results" / "benchmarks" / "denoise" / "synth" / "uniform-0.1" / f"{name}.tsv").exists()
        assert (wd / "logs" / "denoise" / "synth" / "uniform-0.1" / f"{name}.log").exists()
    table = pd.read_csv(base / "results.csv")
    pairs = set(zip(table["model"], table["condition"]))
    assert {("fmlprec", c) for c in ("noisy", "hsd", "steam")} <= pairs
    assert {("hsd", "hsd"), ("steam", "steam")} <= pairs  # the denoisers' own recommenders
