"""Data stage: every source's parser on small files in the real formats, preprocessing
(titles, tie order, k-core, ids), bad input, and byte-identical reruns."""
from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from llm4dsr import config, data, sources
from llm4dsr.sources import movielens
from llm4dsr.io import Llm4dsrError

ROOT = Path(__file__).resolve().parents[1]
WINDOW = {**config.defaults("window"), "max_history": 3, "split": [0.6, 0.2, 0.2],  # 5 windows: 3/1/1
          "max_eval_windows": None, "min_test_users": 1}


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _title_list(items: pd.DataFrame) -> list[str | None]:
    return [t if isinstance(t, str) else None for t in items.title]


def _gz_lines(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


@pytest.fixture
def data_local_cfg(tmp_path: Path) -> dict:
    """A local dataset: 3 users x 3 items, every user and item with 2+ interactions."""
    inter = _write(tmp_path / "interactions.csv",
                   "user,item,timestamp\n"
                   "u1,a,10\nu1,b,10\nu1,c,5\n"
                   "u2,a,1\nu2,c,2\n"
                   "u3,b,7\nu3,c,8\nu3,a,9\n")
    items = _write(tmp_path / "items.csv", 'item,title\na,Alpha\nb,"Beta, the"\nc,Alpha\n')
    return config.dataset({"source": "local", "interactions": str(inter), "items": str(items), "kcore": 2})


# --------------------------------------------------------------------------- parsers
def test_ml_latest_small_from_wheel():
    inter, items = sources.load_raw(config.dataset({"source": "ml-latest-small"}))
    assert len(inter) == 100_004
    assert inter.user.nunique() == 671
    assert inter["item"].nunique() == 9_066
    assert items.title.notna().all()
    assert inter.timestamp.dtype == "int64"


def test_movielens_csv_format(tmp_path):
    ratings = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,2,3.0,1260759179\n")
    movies = _write(tmp_path / "movies.csv", 'movieId,title,genres\n31,"Dangerous Minds, The (1995)",Drama\n2,Jumanji (1995),Fantasy\n')
    inter, items = movielens.read_csv_release(ratings, movies)
    assert inter.to_dict("list") == {"user": ["1", "1"], "item": ["31", "2"],
                                     "timestamp": [1260759144, 1260759179], "rating": [2.5, 3.0]}
    assert items.title.tolist() == ["Dangerous Minds, The (1995)", "Jumanji (1995)"]


def test_recbole_format(tmp_path):
    inter = _write(tmp_path / "x.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                         "196\t242\t3\t881250949\n186\t302\t3\t891717742.0\n")
    item = _write(tmp_path / "x.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                       '242\tKolya\t1996\tComedy\n302\t"L.A." Confidential\t\tCrime\n267\tunkonwn\tunkonwn\tunknown\n')
    raw, items = movielens.read_recbole(inter, item)
    assert raw.timestamp.tolist() == [881250949, 891717742]
    assert _title_list(items) == ["Kolya (1996)", '"L.A." Confidential', None]


def test_ml1m_zip_format(tmp_path):
    with zipfile.ZipFile(tmp_path / "ml-1m.zip", "w") as z:
        z.writestr("ml-1m/ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n".encode("latin-1"))
        z.writestr("ml-1m/movies.dat", "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                                       "661::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n".encode("latin-1"))
    inter, items = sources.load_raw(config.dataset({"source": "ml-1m"}), tmp_path)
    assert inter[["user", "item", "timestamp"]].values.tolist() == [["1", "1193", 978300760], ["2", "661", 978302109]]
    assert items.title.tolist() == ["One Flew Over the Cuckoo's Nest (1975)", "Cité des enfants perdus, La (1995)"]


def test_amazon2014_format(tmp_path):
    cat = "Toys_and_Games"
    _gz_lines(tmp_path / f"reviews_{cat}_5.json.gz", [
        json.dumps({"reviewerID": "A1", "asin": "B01", "reviewerName": "x", "helpful": [0, 0], "reviewText": "ok",
                    "overall": 5.0, "summary": "s", "unixReviewTime": 1370304000, "reviewTime": "06 4, 2013"}),
        json.dumps({"reviewerID": "A2", "asin": "B02", "overall": 4.0, "unixReviewTime": 1370390400}),
    ])
    _gz_lines(tmp_path / f"meta_{cat}.json.gz", [
        "{'asin': 'B01', 'title': \"Bob's Toy &amp; Co\", 'price': 3.5, 'categories': [['Toys & Games']]}",
        "{'asin': 'B02', 'salesRank': {'Toys & Games': 11}}",
    ])
    inter, items = sources.load_raw(config.dataset({"source": "amazon2014", "category": cat}), tmp_path)
    assert inter[["user", "item", "timestamp", "rating"]].values.tolist() == [
        ["A1", "B01", 1370304000, 5.0], ["A2", "B02", 1370390400, 4.0]]
    assert _title_list(items) == ["Bob's Toy & Co", None]


def test_amazon2018_format(tmp_path):
    cat = "Video_Games"
    _gz_lines(tmp_path / f"{cat}_5.json.gz", [
        json.dumps({"overall": 5.0, "verified": True, "reviewTime": "10 17, 2015", "reviewerID": "A1",
                    "asin": "0700026657", "style": {"Format:": " Video Game"}, "unixReviewTime": 1445040000}),
    ])
    _gz_lines(tmp_path / f"meta_{cat}.json.gz", [
        json.dumps({"asin": "0700026657", "title": "Anno 2070 &amp; more", "brand": "Ubisoft"}),
        json.dumps({"asin": "0700026657", "title": "a later duplicate"}),
        json.dumps({"asin": "B2", "title": '<span class="a-size-medium a-color-secondary">'}),
        json.dumps({"asin": "B3", "title": "  "}),
    ])
    dataset = config.dataset({"source": "amazon2018", "category": cat})
    inter, items = sources.load_raw(dataset, tmp_path)
    assert inter[["user", "item", "timestamp"]].values.tolist() == [["A1", "0700026657", 1445040000]]
    assert _title_list(items) == ["Anno 2070 & more", "a later duplicate", None, None]
    # the 2018 metadata repeats some asins: the first title is kept, and the conflict counted
    _, catalogue, checks = data.check_raw(inter, items, {**dataset, "max_dropped_fraction": 1.0})
    assert _title_list(catalogue) == ["Anno 2070 & more"]
    assert checks["problems"]["conflicting_title"]["rows"] == 1


def test_local_format_and_preprocess(data_local_cfg, tmp_path):
    summary = data.run(data_local_cfg, WINDOW, seed=0, out_dir=tmp_path / "out")
    inter = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    # ties keep file order: u1's a and b share t=10 and follow c (t=5)
    assert inter.values.tolist() == [[0, 0, 5, 3], [0, 1, 10, 1], [0, 2, 10, 2],
                                     [1, 0, 1, 1], [1, 1, 2, 3],
                                     [2, 0, 7, 2], [2, 1, 8, 3], [2, 2, 9, 1]]
    assert items.to_dict("list") == {"item": [1, 2, 3], "title": ["Alpha", "Beta, the", "Alpha [2]"],
                                     "raw_id": ["a", "b", "c"], "count": [3, 2, 3]}
    assert (summary["users"], summary["items"], summary["interactions"]) == (3, 3, 8)
    assert sum(summary["windows"].values()) == 5


# --------------------------------------------------------------------------- preprocessing
def _log(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user", "item", "timestamp"]).assign(rating=float("nan"))
    return df.astype({"timestamp": "int64"})


def _titles(ids: str) -> pd.DataFrame:
    return pd.DataFrame({"item": list(ids), "title": [f"T{i}" for i in ids]})


def test_kcore_is_iterated():
    # k=2: item c has 1 interaction; removing it leaves u3 with 1, so u3 goes too
    df = _log([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2), ("u3", "c", 1), ("u3", "a", 2)])
    out = data.kcore(df, 2)
    assert sorted(zip(out.user, out["item"])) == [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")]


def test_tie_order_and_ids():
    df = _log([("10", "z", 5), ("9", "y", 5), ("10", "y", 5), ("10", "x", 1), ("9", "z", 5)])
    inter, items, _ = data.preprocess(df, _titles("xyz"), config.dataset({"source": "local", "kcore": 1}), seed=0)
    # users in numeric raw-id order (9 before 10); equal times keep file order
    assert inter.values.tolist() == [[0, 0, 5, 2], [0, 1, 5, 3], [1, 0, 1, 1], [1, 1, 5, 3], [1, 2, 5, 2]]
    assert items["raw_id"].tolist() == ["x", "y", "z"]


def test_most_recent_items_per_user_and_min_rating():
    df = _log([("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("u", "d", 4)])
    df["rating"] = [5.0, 1.0, 5.0, 5.0]
    inter, items, _ = data.preprocess(df, _titles("abcd"), config.dataset({"source": "local", "kcore": 1, "max_items_per_user": 2, "min_rating": 3}),
                                      seed=0)
    assert items.title.tolist() == ["Tc", "Td"]
    assert inter.timestamp.tolist() == [3, 4]


def test_seeded_user_sample():
    df = _log([(f"u{u}", i, u) for u in range(20) for i in "abc"])
    cfg = config.dataset({"source": "local", "kcore": 1, "max_users": 5})
    a, _, _ = data.preprocess(df, _titles("abc"), cfg, seed=1)
    b, _, _ = data.preprocess(df, _titles("abc"), cfg, seed=1)
    assert a.user.nunique() == 5 and a.equals(b)


def test_users_are_sampled_after_the_kcore_which_is_then_enforced_again():
    """A sparse log: sampling users first would leave most items below k."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{i}", t) for u in range(400) for t, i in enumerate(rng.zipf(1.6, 6) % 300)]
    df = _log(rows)
    cfg = config.dataset({"source": "local", "kcore": 3, "max_users": 60})
    inter, items, trace = data.preprocess(df, _titles([f"i{i}" for i in range(300)]), cfg, seed=0)
    assert list(trace)[-2:] == ["kcore", "max_users"] and trace["max_users"]["users"] == inter.user.nunique()
    assert 50 <= inter.user.nunique() <= 60  # few sampled users fall below the k-core again
    assert inter.groupby("user").size().min() >= 3 and inter.groupby("item").size().min() >= 3
    sampled_first = df[df.user.isin(rng.choice(df.user.unique(), 60, replace=False))]
    assert data.kcore(sampled_first, 3)["item"].nunique() < len(items)  # what the old order kept


def test_unique_titles():
    assert data.unique_titles(["X", "X", "Y", "X", "X [2]"]) == ["X", "X [2]", "Y", "X [3]", "X [2] [2]"]


# --------------------------------------------------------------------------- bad input
def _one_line_error(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg


def test_config_value_out_of_range_names_the_key():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["datasets"]["ml-latest-small"]["kcore"] = 0
    with pytest.raises(Llm4dsrError, match="datasets.ml-latest-small.kcore"):
        config.validate(cfg)


def test_missing_file_leaves_no_output(data_local_cfg, tmp_path):
    cfg = {**data_local_cfg, "items": str(tmp_path / "nope.csv")}
    with pytest.raises(Llm4dsrError) as exc:
        data.run(cfg, WINDOW, seed=0, out_dir=tmp_path / "out")
    _one_line_error(exc, "nope.csv", "not found")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_csv_missing_column(data_local_cfg, tmp_path):
    _write(Path(data_local_cfg["interactions"]), "user,item\nu1,a\n")
    with pytest.raises(Llm4dsrError) as exc:
        data.run(data_local_cfg, WINDOW, seed=0, out_dir=tmp_path / "out")
    _one_line_error(exc, "interactions.csv", "timestamp")
    assert not (tmp_path / "out").exists()


def test_empty_titles(data_local_cfg, tmp_path):
    _write(Path(data_local_cfg["items"]), "item,title\na,\nb,  \nc,\n")
    with pytest.raises(Llm4dsrError) as exc:
        data.run(data_local_cfg, WINDOW, seed=0, out_dir=tmp_path / "out")
    _one_line_error(exc, "items.csv", "no item has a title")
    assert not (tmp_path / "out").exists()
    # some empty titles: those items are dropped
    _write(Path(data_local_cfg["items"]), "item,title\na,A\nb,\nc,C\n")
    _, items = sources.load_raw(data_local_cfg)
    assert _title_list(items) == ["A", None, "C"]


def test_bad_timestamp_and_bad_record(data_local_cfg, tmp_path):
    _write(Path(data_local_cfg["interactions"]), "user,item,timestamp\nu1,a,yesterday\n")
    with pytest.raises(Llm4dsrError) as exc:
        sources.load_raw(data_local_cfg)
    _one_line_error(exc, "interactions.csv", "'yesterday'")
    _gz_lines(tmp_path / "reviews_X_5.json.gz", ['{"reviewerID": "A", "asin": "B", "unixReviewTime": 1}', "{oops"])
    with pytest.raises(Llm4dsrError) as exc:
        sources.load_raw(config.dataset({"source": "amazon2014", "category": "X"}), tmp_path)
    _one_line_error(exc, "reviews_X_5.json.gz", "line 2")


def test_amazon_needs_category():
    with pytest.raises(Llm4dsrError) as exc:
        sources.raw_files(config.dataset({"source": "amazon2018"}), "toys")
    _one_line_error(exc, "config datasets.toys.category")


def test_download_checks_md5_and_records_sha256(tmp_path):
    src = _write(tmp_path / "src.zip", "payload")
    sha = sources.download(src.as_uri(), tmp_path / "dl" / "f.zip", md5="321c3cf486ed509164edec1e1981fec8")
    assert (tmp_path / "dl" / "f.zip").read_text() == "payload"
    assert (tmp_path / "dl" / "f.zip.sha256").read_text() == f"{sha}  f.zip\n"
    with pytest.raises(Llm4dsrError) as exc:
        sources.download(src.as_uri(), tmp_path / "dl" / "g.zip", md5="0" * 32)
    _one_line_error(exc, "g.zip", "md5")
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["f.zip", "f.zip.sha256"]


def test_same_seed_byte_identical(data_local_cfg, tmp_path):
    for out in ("a", "b"):
        data.run(data_local_cfg, WINDOW, seed=3, out_dir=tmp_path / out)
    for name in ("interactions.parquet", "items.parquet", "stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.parametrize("source", ["amazon2014", "amazon2018"])
def test_synthetic_amazon_files_go_through_the_real_reader(tmp_path, source):
    """Rehearsal data (datasets.<d>.synthetic): small gzipped files in the release's real
    formats, read by the release's own parser; same bytes on every run."""
    from llm4dsr import synthetic

    entry = config.dataset({"source": source, "category": "Toys_and_Games", "synthetic": {"n_users": 30, "n_items": 25}})
    names = sources.raw_files(entry, "toys")  # the downloads' file names
    for name in names:
        synthetic.write_raw(entry, name, tmp_path / "a" / name, seed=3)
        synthetic.write_raw(entry, name, tmp_path / "b" / name, seed=3)
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    meta = next(n for n in names if n.startswith("meta_"))
    first = gzip.open(tmp_path / "a" / meta, "rt").readline()
    assert first.startswith("{'asin': '" if source == "amazon2014" else '{"asin": "')  # dict literal / JSON
    inter, items = sources.load_raw(entry, tmp_path / "a", "toys")
    assert items["title"].isna().sum() == 1 and any("&" in t and "&amp;" not in t for t in items["title"].dropna())
    out, cat, trace = data.preprocess(inter, items, entry, seed=0)
    assert out.groupby("user").size().min() >= 5 and out.groupby("item").size().min() >= 5
    assert trace["titled"]["interactions"] < trace["raw"]["interactions"]  # the untitled item's reviews went
    with pytest.raises(Llm4dsrError, match="not a raw file"):
        synthetic.write_raw(entry, "ratings.csv", tmp_path / "x", seed=3)


def test_synthetic_data_only_for_amazon_sources():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["datasets"]["ml-latest-small"]["synthetic"] = {"n_users": 30, "n_items": 25}
    with pytest.raises(config.ConfigError, match="datasets.ml-latest-small.synthetic: only for sources amazon2014"):
        config.validate(cfg)
