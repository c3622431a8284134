"""The whole chain under Snakemake on the tiny configuration (.test/config.yaml): data ->
noise -> units -> fine-tune -> export -> score -> detect -> combine -> correct / denoise ->
backbone -> report, with `snakemake --cores 2` in a temporary folder and the tiny random
Llama as the base model. Then every file the run wrote is checked against
docs/outputs.md: it must be documented there, and its columns (Parquet, CSV, TSV,
JSON Lines) or keys (JSON) must be exactly the documented ones.

This is the regression net for the rules' wiring; the numbers are checked elsewhere.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "outputs.md"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
METRICS = [f"{m}@{k}" for m in ("hr", "ndcg") for k in (5, 10, 20)]  # backbone.ks: the schema's default


@dataclass(frozen=True)
class Output:
    doc: str  # the path as docs/outputs.md writes it (the row that documents the file)
    pattern: str  # regular expression of the file's path under results/{dataset}/
    kind: str  # parquet | csv | tsv | jsonl | json | detection | backbone | file
    names: tuple[str, ...] = ()  # columns / keys; "{metric}" stands for each of METRICS
    same_as: str | None = None  # the documented path whose row lists the columns ("same columns as ...")

    def expected(self) -> set[str]:
        return {n.replace("{metric}", m) for n in self.names for m in (METRICS if "{metric}" in n else [""])}


N = r"(uniform|popularity|confusable)-[0-9.]+"  # a noise setting
WINDOWS = ("window", "user", "split", "target_pos", "time", "history", "history_noise", "history_clean", "target",
           "target_noise", "target_clean")
UNITS = ("unit", "user", "split", "window", "positions", "items", "noise")
SCORES = ("unit", "probs", "logp")
CHANGES = ("unit", "user", "split", "pos", "old_item", "new_item", "prob", "was_noise")
DENOISERS = "hsd|steam"  # llm4dsr.names.DENOISERS, whose changes also name their window and operation
SWEEP = ("model", "condition", "seeds", "n_test", "test_users", "{metric}_mean", "{metric}_ci_low", "{metric}_ci_high",
         "{metric}_std", "{metric}_gain_pct", "{metric}_diff_noisy", "{metric}_diff_noisy_ci_low",
         "{metric}_diff_noisy_ci_high", "{metric}_diff_mostpop", "{metric}_diff_mostpop_ci_low",
         "{metric}_diff_mostpop_ci_high", "best_epoch_mean", "train_seconds_mean")
TABLE = (*SWEEP, "{metric}_gap_clean", "{metric}_gap_clean_ci_low", "{metric}_gap_clean_ci_high")  # clean in the table
R = "results/{dataset}"
OUTPUTS = [
    Output(f"{R}/data/interactions.parquet", r"data/interactions\.parquet", "parquet", ("user", "pos", "timestamp", "item")),
    Output(f"{R}/data/items.parquet", r"data/items\.parquet", "parquet", ("item", "title", "raw_id", "count")),
    Output(f"{R}/data/stats.json", r"data/stats\.json", "json",
           ("source", "steps", "problems", "affected", "affected_fraction", "max_dropped_fraction", "titles_cut",
            "users", "items", "interactions", "windows", "eval_windows_kept", "eval_users_kept",
            "mean_history_length", "mean_window_history", "density")),
    Output(f"{R}/{{noise}}/sequences.parquet", rf"{N}/sequences\.parquet", "parquet",
           ("user", "pos", "timestamp", "item", "item_clean", "noise", "split")),
    Output(f"{R}/{{noise}}/windows.parquet", rf"{N}/windows\.parquet", "parquet", WINDOWS),
    Output(f"{R}/{{noise}}/noise_stats.json", rf"{N}/noise_stats\.json", "json",
           ("setting", "model", "rate_requested", "interactions", "eligible", "kept_clean", "window_history")),
    Output(f"{R}/{{noise}}/units.parquet", rf"{N}/units\.parquet", "parquet", UNITS),
    Output(f"{R}/{{noise}}/scores/{{detector}}.parquet", rf"{N}/scores/\w+\.parquet", "parquet", SCORES),
    Output(f"{R}/{{noise}}/suggestions.parquet", rf"{N}/suggestions\.parquet", "parquet",
           ("unit", "index", "pos", "rank", "item", "title")),
    Output(f"{R}/{{noise}}/score_stats.json", rf"{N}/score_stats\.json", "json",
           ("units", "skipped_empty", "methods", "seconds", "s_per_unit", "units_per_s", "suggestions",
            "seconds_suggest", "tokens_evaluated", "greedy_unparsed", "model", "lora", "n_ctx")),
    Output(f"{R}/selfsup/{{train_noise}}/score_stats.json", rf"selfsup/{N}/score_stats\.json", "json",  # no greedy_unparsed
           ("units", "skipped_empty", "methods", "seconds", "s_per_unit", "units_per_s", "suggestions",
            "seconds_suggest", "tokens_evaluated", "model", "lora", "n_ctx")),
    Output(f"{R}/selfsup/{{train_noise}}/units.parquet", rf"selfsup/{N}/units\.parquet", "parquet", UNITS,
           f"{R}/{{noise}}/units.parquet"),
    Output(f"{R}/selfsup/{{train_noise}}/scores/llm_*.parquet", rf"selfsup/{N}/scores/llm_\w+\.parquet", "parquet", SCORES,
           f"{R}/{{noise}}/scores/{{detector}}.parquet"),
    Output(f"{R}/{{noise}}/selfsup/scores/{{detector}}.parquet", rf"{N}/selfsup/scores/\w+\.parquet", "parquet", SCORES,
           f"{R}/{{noise}}/scores/{{detector}}.parquet"),
    Output(f"{R}/{{noise}}/detection.json", rf"{N}/detection\.json", "detection",  # + "paired"
           ("units", "users", "items", "noise_items", "units_unscored", "roc_auc", "pr_auc", "top1", "roc_auc_ci",
            "pr_auc_ci", "top1_ci", "top1_units", "roc_auc_within", "roc_auc_within_ci", "roc_auc_within_units", "threshold", "flagged", "precision", "recall", "calibration", "ece")),
    Output(f"{R}/{{noise}}/correct/{{condition}}/windows.parquet", rf"{N}/correct/[\w.-]+/windows\.parquet", "parquet",
           WINDOWS, f"{R}/{{noise}}/windows.parquet"),
    Output(f"{R}/{{noise}}/correct/{{condition}}/changes.parquet",
           rf"{N}/correct/(?!(?:{DENOISERS})/)[\w.-]+/changes\.parquet", "parquet", CHANGES),
    Output(f"{R}/{{noise}}/correct/{{denoiser}}/changes.parquet", rf"{N}/correct/({DENOISERS})/changes\.parquet",
           "parquet", (*CHANGES, "window", "op")),
    Output(f"{R}/{{noise}}/denoise/{{denoiser}}.json", rf"{N}/denoise/({DENOISERS})\.json", "backbone",
           ("model", "condition", "seed", "test", "valid", "best_epoch", "epochs_run", "n_train", "n_valid", "n_test",
            "n_items", "dataset", "noise", "train_seconds", "score_seconds", "correct_seconds", "changes", "config")),
    Output(f"{R}/{{noise}}/denoise/{{denoiser}}.ranks.parquet", rf"{N}/denoise/({DENOISERS})\.ranks\.parquet",
           "parquet", ("window", "user", "rank")),
    Output(f"{R}/finetune/{{train_noise}}/", rf"finetune/{N}/sft_train\.jsonl", "jsonl",
           ("prompt", "response", "noise_index", "items", "original", "candidates")),
    Output(f"{R}/finetune/{{train_noise}}/", rf"finetune/{N}/loss\.tsv", "tsv", ("step", "loss", "tokens", "seconds")),
    Output(f"{R}/finetune/{{train_noise}}/", rf"finetune/{N}/learning_curve\.tsv", "tsv",
           ("step", "examples_seen", "top1", "roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "examples",
            "valid_roc_auc_within", "valid_roc_auc_within_ci_low", "valid_roc_auc_within_ci_high", "valid_units")),
    Output(f"{R}/finetune/{{train_noise}}/", rf"finetune/{N}/adapter/.*", "file", ("adapter/",)),
    Output(f"{R}/finetune/{{train_noise}}/", rf"finetune/{N}/checkpoints/.*", "file", ("checkpoints/",)),
    Output(f"{R}/export/{{train_noise}}/", rf"export/{N}/adapter\.gguf", "file", ("adapter.gguf",)),
    Output(f"{R}/embed/{{train_noise}}/items.parquet", rf"embed/{N}/items\.parquet", "parquet", ("item", "embedding")),
    Output(f"{R}/export/{{train_noise}}/", rf"export/{N}/parity\.json", "json",
           ("model", "lora", "quant", "min_corr_required", "ok", "prompts")),
    Output(f"{R}/{{noise}}/backbone/{{model}}/{{condition}}/seed{{seed}}.json", rf"{N}/backbone/\w+/[\w.-]+/seed\d+\.json",
           "backbone", ("test", "valid", "select_metric", "objective", "best_epoch", "epochs_run", "train_seconds",
                        "sequences_per_s", "n_train",
                        "n_valid", "n_test", "test_users", "n_items", "device", "dataset", "noise", "model", "condition",
                        "seed")),
    Output(f"{R}/{{noise}}/backbone/{{model}}/{{condition}}/seed{{seed}}.ranks.parquet",
           rf"{N}/backbone/\w+/[\w.-]+/seed\d+\.ranks\.parquet", "parquet", ("window", "user", "rank")),
    Output(f"{R}/{{noise}}/results.csv", rf"{N}/results\.csv", "csv", TABLE),
    Output(f"{R}/{{noise}}/results.csv", rf"{N}/results\.md", "file", ("results.md",)),
    Output(f"{R}/{{noise}}/sweep.csv", rf"{N}/sweep\.csv", "csv", SWEEP, f"{R}/{{noise}}/results.csv"),
    Output(f"{R}/{{noise}}/sweep.csv", rf"{N}/sweep\.md", "file", ("sweep.md",)),
    Output(f"{R}/report/report.ipynb", r"report/report(_code)?\.(ipynb|html)", "file"),
    Output(f"{R}/report/figures/{{name}}.png", r"report/figures/[\w.-]+\.png", "file",
           ("detection_quality", "detection_curves_{noise}", "calibration", "ndcg_bars", "threshold", "noise_rate",
            "lora_loss", "examples")),
    Output(f"{R}/report/detection.csv", r"report/detection\.csv", "csv",
           ("noise", "detector", "roc_auc_within", "roc_auc_within_ci_low", "roc_auc_within_ci_high", "roc_auc",
            "roc_auc_ci_low", "roc_auc_ci_high", "pr_auc", "pr_auc_ci_low", "pr_auc_ci_high", "top1", "top1_ci_low",
            "top1_ci_high", "ece", "units", "roc_auc_within_units", "users", "noise_items")),
]


def doc_rows() -> dict[str, str]:
    """docs/outputs.md's table: the row of each documented path (first cell) by path."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = line.split("|")
        if line.startswith("| `") and len(cells) > 3:
            for path in re.findall(r"`([^`]+)`", cells[1]):
                rows[path] = line
    return rows


def test_the_checker_follows_docs_outputs_md():
    """Every name the checker expects is written in backticks in its path's row of
    docs/outputs.md, so the checker and the documentation say the same thing."""
    rows = doc_rows()
    for out in OUTPUTS:
        assert out.doc in rows, f"{out.doc} is not a documented path"
        missing = [n for n in out.names if f"`{n}" not in rows[out.same_as or out.doc]]
        assert not missing, f"{out.doc}: {missing} not documented"


@pytest.fixture(scope="module")
def run(tiny_run):
    """The tiny configuration run to the end, in a fresh folder (conftest.py: tiny_run)."""
    return tiny_run


def test_the_chain_runs_to_the_report_and_is_complete(run):
    top = run / "results" / "ml-tiny"
    assert (top / "report" / "report.html").stat().st_size > 10_000
    for rule in ("data", "noise", "units", "selfsup_units", "finetune", "export", "score", "detector_scores",
                 "combine", "detection_metrics", "correct", "denoise", "backbone", "backbone_table", "sweep_table",
                 "report"):
        assert any((run / "logs" / rule).rglob("*.log")), rule
    again = subprocess.run([*SNAKEMAKE, "-d", str(run), "--cores", "2", "-n"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def test_every_output_has_its_documented_columns(run):
    top = run / "results" / "ml-tiny"
    files = sorted(p for p in top.rglob("*") if p.is_file() and p.name != ".snakemake_timestamp")
    seen = set()
    for path in files:
        rel = path.relative_to(top).as_posix()
        match = [o for o in OUTPUTS if re.fullmatch(o.pattern, rel)]
        assert len(match) == 1, f"{rel}: matches {len(match)} documented outputs"
        out = match[0]
        seen.add(out.pattern)
        want = out.expected()
        if out.kind == "parquet":
            got = set(pd.read_parquet(path).columns)
        elif out.kind in ("csv", "tsv"):
            got = set(pd.read_csv(path, sep="\t" if out.kind == "tsv" else ",", nrows=0).columns)
        elif out.kind == "jsonl":
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            assert lines and all(set(x) == set(lines[0]) for x in lines), rel
            got = set(lines[0])
        elif out.kind in ("json", "backbone"):
            data = json.loads(path.read_text())
            got = set(data)
            if out.kind == "backbone":
                assert set(data["test"]) == set(data["valid"]) == set(METRICS), rel
        elif out.kind == "detection":
            data = json.loads(path.read_text())
            paired = data.pop("paired")
            assert set(data) == {"llm_trie", "llm_first_token", "llm_full_title", "popularity", "cooccurrence",
                                 "llm_embedding", "combined", "combined_collab", "combined_no_embedding", "hsd",
                                 "steam"}, rel
            assert {"llm_trie - popularity", "llm_trie - steam", "llm_trie - llm_full_title",
                    "llm_embedding - llm_trie", "llm_embedding - cooccurrence", "combined - combined_collab",
                    "combined - combined_no_embedding"} <= set(paired)
            assert "llm_trie - llm_embedding" not in paired
            for pair in paired.values():  # "A - B" -> split -> metric -> diff, ci
                assert set(pair) == {"train", "valid", "test"} and all(
                    set(m) == {"roc_auc", "pr_auc", "top1", "roc_auc_within"} and all(set(v) == {"diff", "ci"} for v in m.values())
                    for m in pair.values()), rel
            for detector, splits in data.items():
                assert set(splits) == {"train", "valid", "test"}, (rel, detector)
                assert all(set(m) == want for m in splits.values()), (rel, detector, set(splits["test"]) ^ want)
            continue
        else:
            continue
        assert got == want, f"{rel}: columns {sorted(got)}; documented {sorted(want)}"
    assert seen == {o.pattern for o in OUTPUTS}, f"not written: {[o.doc for o in OUTPUTS if o.pattern not in seen]}"
    figures = {p.stem for p in (top / "report" / "figures").glob("*.png")}
    documented = {"detection_quality", "detection_curves_uniform-0.2", "calibration", "ndcg_bars", "threshold",
                  "noise_rate", "lora_loss", "examples"}
    assert documented - {"noise_rate"} <= figures <= documented  # one uniform setting: no noise-rate figure


def test_the_chain_is_wired(run):
    """What the rules hand each other: windows keep their rows, targets of valid/test
    windows are never changed, suggestions point into their units, and `random` makes
    as many changes per split as llm4dsr."""
    base = run / "results" / "ml-tiny" / "uniform-0.2"
    windows = pd.read_parquet(base / "windows.parquet")
    units = pd.read_parquet(base / "units.parquet").set_index("unit")
    held = windows["split"] != "train"
    for cond in ("clean", "llm4dsr", "llm4dsr_no_uncertainty", "popularity", "cooccurrence", "random", "llm4dsr-p50",
                 "hsd", "steam"):
        out = pd.read_parquet(base / "correct" / cond / "windows.parquet")
        assert out["window"].equals(windows["window"]) and out["split"].equals(windows["split"]), cond
        if cond != "clean":
            assert out.loc[held, "target"].equals(windows.loc[held, "target"]), cond
    sugg = pd.read_parquet(base / "suggestions.parquet")
    assert len(sugg) == len(units) and sugg["unit"].is_unique  # suggest.top_k: 1
    assert all(p == units.at[u, "positions"][k] for u, k, p in zip(sugg["unit"], sugg["index"], sugg["pos"]))
    llm = pd.read_parquet(base / "correct" / "llm4dsr" / "changes.parquet")
    rnd = pd.read_parquet(base / "correct" / "random" / "changes.parquet")
    assert len(llm) and rnd.groupby("split").size().equals(llm.groupby("split").size())
    results = pd.read_csv(base / "results.csv")
    assert set(results["condition"]) == {"clean", "noisy", "llm4dsr", "llm4dsr_no_uncertainty", "popularity",
                                         "cooccurrence", "random", "hsd", "steam"}
    assert {("hsd", "hsd"), ("steam", "steam")} <= set(zip(results["model"], results["condition"]))  # own recommenders
    assert set(pd.read_csv(base / "sweep.csv")["condition"]) == {"noisy", "llm4dsr-p50"}
