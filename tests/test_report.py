"""The report notebook on a synthetic results tree: runs clean, draws every figure, and
renders to HTML that loads nothing from the network."""
from pathlib import Path

import nbformat
import numpy as np
import pytest
import report_synth

from llm4dsr import figures, report
from llm4dsr.io import Llm4dsrError

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "report.ipynb"
NOISES = ["uniform-0.0", "uniform-0.1", "popularity-0.1"]
# detection quality, calibration, NDCG bars, threshold, noise rate, LoRA loss, examples,
# plus ROC/PR curves per setting with injected noise
FIGURES = 7 + len(figures.injected(NOISES))


def execute(tmp_path: Path, **params) -> tuple[nbformat.NotebookNode, str, Path]:
    out = tmp_path / "report"
    report.run(NOTEBOOK, out / "report.ipynb", out / "report.html",
               {"dataset": "synth", "results_dir": str(tmp_path / "results"), "noise_settings": NOISES,
                "main_noise": "uniform-0.1", "detection_csv": str(out / "detection.csv"), **params},
               figures_dir=out / "figures", out_code_html=out / "report_code.html")
    return nbformat.read(out / "report.ipynb", as_version=4), (out / "report.html").read_text(), out


def outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


def images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs(nb, "display_data"))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    report_synth.build(tmp / "results", noises=tuple(NOISES))
    return execute(tmp)


def test_every_figure_drawn_without_errors(full):
    nb, html, out = full
    assert not outputs(nb, "error")
    assert images(nb) == FIGURES
    assert len(list((out / "figures").glob("*.png"))) == FIGURES
    assert (out / "detection.csv").read_text().startswith("noise,detector,roc_auc")
    assert "note:" not in "".join(o.get("text", "") for o in outputs(nb, "stream"))


def test_html_is_offline_and_holds_the_figures(full):
    nb, html, out = full
    report.check_offline(html)
    assert "<script src=" not in html and "cdnjs" not in html
    assert html.count('src="data:image/png;base64') == FIGURES
    assert "ROC-AUC from best to worst" in html  # the computed prose made it into the page
    # readers get text, tables and figures; the code is in the page beside it
    assert 'class="highlight' not in html and "import json" not in html
    assert 'class="highlight' in (out / "report_code.html").read_text()
    assert "'steps':" not in html and "after kcore" not in html  # the synthetic stats have no steps


def test_every_claim_carries_its_interval(full):
    """Each detector's ROC-AUC is quoted with its interval, and each paired difference is
    called a finding or not according to whether its interval excludes 0."""
    import json
    import re

    nb, html, out = full
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    report = json.loads((out.parent / "results" / "synth" / "uniform-0.1" / "detection.json").read_text())
    for name in ("popularity", "cooccurrence"):
        m = report[name]["test"]
        assert f"{m['roc_auc']:.3f} [{m['roc_auc_ci'][0]:.3f}, {m['roc_auc_ci'][1]:.3f}]" in text
    d = report["paired"]["llm_trie - cooccurrence"]["test"]["roc_auc"]
    quoted = f"{d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
    verdict = "is higher" if d["ci"][0] > 0 else "is lower" if d["ci"][1] < 0 else "cannot tell them apart"
    assert re.search(re.escape(quoted) + r": [^.]*" + verdict, text)

def test_where_corrections_land_follows_the_changes(full):
    """Per split, llm4dsr's changes per history-length bin beside the items and the noise."""
    import pandas as pd

    from llm4dsr.correct import spread

    nb, html, out = full
    assert "changes land" in markdown(nb)
    base = out.parent / "results" / "synth" / "uniform-0.1"
    t = spread(pd.read_parquet(base / "units.parquet"),
               pd.read_parquet(base / "correct" / "llm4dsr" / "changes.parquet"))
    test = t[t["split"] == "test"]
    assert test["changes"].sum() > 0 and "injected noise" in html
    for share, n in zip(test["changes_share"], test["changes"]):
        assert f"{share:.0%} ({n})" in html


def test_missing_optional_inputs_are_skipped_with_a_note(tmp_path):
    top = report_synth.build(tmp_path / "results", noises=tuple(NOISES))
    for p in [top / "uniform-0.1" / "sweep.csv", top / "finetune" / "uniform-0.0" / "loss.tsv",
              *top.glob("*/scores/combined.parquet"), *top.glob("*/detection.json")]:
        p.unlink()
    nb, html, out = execute(tmp_path, detectors=["llm_trie", "popularity", "combined"])
    assert not outputs(nb, "error")
    notes = "".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert "sweep.csv not found" in notes and "loss.tsv not found" in notes and "combined.parquet not found" in notes
    # without detection.json there is no quality bar chart nor calibration; no sweep, no loss
    assert images(nb) == FIGURES - 4


def test_backbone_tables_render_bold_as_html_and_show_the_references(full):
    """Issue 26: a finding's bold is CSS in the HTML table, never Markdown's ** printed as
    is; the tables hold the mostpop rows and each backbone minus mostpop; the text states
    the random ranking's level, computed from the number of items (40 here)."""
    import re

    nb, html, out = full
    assert "**+" not in html and "**-" not in html
    assert "font-weight: bold" in html
    assert "minus mostpop" in html and re.search(r"<th[^>]*>mostpop</th>", html)
    assert f"a random ranking of the 40 items scores NDCG@10 {sum(1 / np.log2(r + 1) for r in range(1, 11)) / 40:.4f}" \
        in markdown(nb)


def test_data_steps_keep_the_pipeline_order():
    """stats.json's keys are sorted; the table lists the steps as the pipeline ran them."""
    stats = {"users": 3, "items": 4, "interactions": 9,
             "steps": {s: {"users": 3, "items": 4, "interactions": 9}
                       for s in ("checked", "kcore", "max_items_per_user", "max_users", "read")}}
    rows = [r for r in figures.stats_table(stats).index if r.startswith("after ")]
    assert rows == ["after read", "after checked", "after max items per user", "after kcore", "after max users"]


def test_remote_scripts_are_refused():
    with pytest.raises(Llm4dsrError, match="remote script"):
        report.check_offline('<html><script src="https://cdn.example.org/require.js"></script></html>')
    with pytest.raises(Llm4dsrError, match="remote script"):
        report.check_offline('<script type="module">await import("https://cdn.example.org/m.mjs")</script>')
    report.check_offline("<script>var x = 1;</script>")


def markdown(nb: nbformat.NotebookNode) -> str:
    return "\n".join(o["data"]["text/markdown"] for o in outputs(nb, "display_data") if "text/markdown" in o.get("data", {}))


def test_detection_numbers_follow_the_files(full):
    """Guard: the report's detection table and its sentences are the files' numbers. Point
    values are recomputed here from units.parquet and scores/*.parquet (test split) and
    from the backbone runs' JSONs; intervals (bootstrap replicates) are read from
    detection.json and results.csv."""
    import json

    import numpy as np
    import pandas as pd
    from sklearn.metrics import average_precision_score, roc_auc_score

    from llm4dsr.names import LABELS, LLM_DETECTORS

    nb, _, out = full
    top = out.parent / "results" / "synth"
    table = pd.read_csv(out / "detection.csv")
    text = markdown(nb)
    assert list(table[["noise", "detector"]].itertuples(index=False, name=None)) == \
        [(n, d) for n in NOISES for d in report_synth.DETECTORS]

    def ci(pair, digits=3, sign=False):
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        return f"[{f.format(pair[0])}, {f.format(pair[1])}]"

    for noise in figures.injected(NOISES):
        units = pd.read_parquet(top / noise / "units.parquet").set_index("unit")
        report = json.loads((top / noise / "detection.json").read_text())
        got = {}
        for d in report_synth.DETECTORS:
            scores = pd.read_parquet(top / noise / "scores" / f"{d}.parquet")
            y, p, top1, users, within = [], [], [], set(), []
            for u, probs in zip(scores["unit"], scores["probs"]):
                if units.at[u, "split"] != "test":
                    continue
                y += list(units.at[u, "noise"])
                p += list(probs)
                users.add(units.at[u, "user"])
                if sum(units.at[u, "noise"]):
                    top1.append(units.at[u, "noise"][int(np.argmax(probs))])
                if 0 < sum(units.at[u, "noise"]) < len(probs):  # each history's own ROC-AUC
                    within.append(roc_auc_score(units.at[u, "noise"], probs))
            got[d] = {"roc_auc": roc_auc_score(y, p), "pr_auc": average_precision_score(y, p),
                      "top1": float(np.mean(top1)), "noise_items": sum(y), "users": len(users),
                      "roc_auc_within": float(np.mean(within)), "roc_auc_within_units": len(within)}
            row = table[(table["noise"] == noise) & (table["detector"] == d)].iloc[0]
            for k, v in got[d].items():
                assert row[k] == pytest.approx(v, abs=1e-9), (noise, d, k)
            for k in ("roc_auc", "pr_auc", "top1", "roc_auc_within"):
                assert [row[f"{k}_ci_low"], row[f"{k}_ci_high"]] == pytest.approx(report[d]["test"][f"{k}_ci"])
        llm = "llm_trie"

        def ranking(metric, name):
            ranked = sorted(got, key=lambda d: -got[d][metric])
            text = f"{name} from best to worst: " + ", ".join(
                f"{LABELS[d]} {got[d][metric]:.3f} {ci(report[d]['test'][f'{metric}_ci'])}" for d in ranked) + "."
            for pair, by_split in report["paired"].items():
                a, b = pair.split(" - ")
                if a != llm and a not in LLM_DETECTORS and a != "combined":
                    continue
                diff, interval = got[a][metric] - got[b][metric], by_split["test"][metric]["ci"]
                verdict = (f"{LABELS[a]} is {'higher' if diff > 0 else 'lower'}" if interval[0] > 0 or interval[1] < 0
                           else "the study cannot tell them apart at this size")
                what = "within-history ROC-AUC" if metric == "roc_auc_within" else "ROC-AUC"
                text += f" {LABELS[a]} minus {LABELS[b]}, {what} {diff:+.3f} {ci(interval, sign=True)}: {verdict}."
            return text

        # the headline (within each history) first, then the pooled figure beside it
        expected = (f"On {noise} (test split, {got[llm]['users']} users, {got[llm]['noise_items']} noise items), "
                    + ranking("roc_auc_within", f"mean ROC-AUC within a history ({got[llm]['roc_auc_within_units']} "
                              "histories holding noise and clean items; chance 0.5)")
                    + " Pooled over all items (which also ranks by history length), " + ranking("roc_auc", "ROC-AUC"))
        assert expected in text, expected

    # the backbone sentences: NDCG@10 differences from the runs' JSONs, intervals from results.csv
    for noise in NOISES:
        windows = pd.read_parquet(top / noise / "windows.parquet")
        users = windows.loc[windows["split"] == "test", "user"].nunique()
        results = pd.read_csv(top / noise / "results.csv").set_index(["model", "condition"])
        runs = [json.loads(p.read_text()) for p in (top / noise / "backbone").glob("*/*/seed*.json")]
        for model in ("sasrec", "gru4rec"):
            mean = {c: np.mean([r["test"]["ndcg@10"] for r in runs if (r["model"], r["condition"]) == (model, c)])
                    for c in ("clean", "noisy", "llm4dsr", "popularity")}
            found, unclear = [], []
            for c in ("clean", "llm4dsr", "popularity"):
                interval = results.loc[(model, c), ["ndcg@10_diff_noisy_ci_low", "ndcg@10_diff_noisy_ci_high"]].tolist()
                quoted = f"{c} {mean[c] - mean['noisy']:+.4f} {ci(interval, 4, sign=True)}"
                (found if interval[0] > 0 or interval[1] < 0 else unclear).append(quoted)
            line = (f"- {model} on {noise} ({users} test users), NDCG@10 minus noisy: "
                    + ("findings: " + "; ".join(found) + ". " if found else "no condition differs from noisy. ")
                    + ("Not distinguishable from noisy at this size: " + "; ".join(unclear) + "." if unclear else ""))
            interval = results.loc[(model, "llm4dsr"), ["ndcg@10_gap_clean_ci_low", "ndcg@10_gap_clean_ci_high"]].tolist()
            line += (f" Clean minus llm4dsr: {mean['clean'] - mean['llm4dsr']:+.4f} {ci(interval, 4, sign=True)}"
                     f"{' (a finding)' if interval[0] > 0 or interval[1] < 0 else ''}.")
            shown = [t for t in text.splitlines() if t.startswith(f"- {model} on {noise} (")]
            assert len(shown) == 1 and same_text(line, shown[0]), (line, shown)


def same_text(expected: str, shown: str, tol: float = 1.01e-4) -> bool:
    """The same sentence, each number within ``tol`` (results.csv holds 6 decimals, so a
    4-decimal figure may round the other way)."""
    import re

    number = r"[+-]?\d+\.\d+"
    a, b = re.findall(number, expected), re.findall(number, shown)
    return (re.sub(number, "#", expected) == re.sub(number, "#", shown) and len(a) == len(b)
            and all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b)))


def test_learning_curve_shows_the_injected_noise_figure_beside_the_self_supervised_one():
    import pandas as pd

    curve = pd.DataFrame({"step": [0, 20, 40], "examples_seen": [0, 160, 320], "top1": [0.1, 0.2, 0.3],
                          "roc_auc": [0.6, 0.55, 0.52], "roc_auc_ci_low": [0.5, 0.45, 0.42],
                          "roc_auc_ci_high": [0.7, 0.65, 0.62], "examples": 60,
                          "valid_roc_auc_within": [0.51, 0.49, 0.5], "valid_roc_auc_within_ci_low": [0.46, 0.44, 0.45],
                          "valid_roc_auc_within_ci_high": [0.56, 0.54, 0.55], "valid_units": 150})
    text = figures.curve_summary(curve)
    assert "150 valid units" in text and "0.510 [0.460, 0.560]" in text and "0.500 [0.450, 0.550]" in text
    loss = pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.9], "tokens": 10, "seconds": [1.0, 2.0]})
    ax = figures.fig_loss(loss, curve).axes[1]
    labels = [line.get_label() for line in ax.get_lines()]
    assert any("injected noise" in label for label in labels) and any("self-supervised ROC" in label for label in labels)
    assert len(ax.collections) == 2  # an interval band for each ROC-AUC curve
