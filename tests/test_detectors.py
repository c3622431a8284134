"""Non-LLM detectors find planted outliers; the co-occurrence suggester stays in the community."""
import numpy as np
import pandas as pd
import pytest

from denoise_synth import make_log
from llm4dsr.detectors import Cooccurrence, IdTransformer, Popularity, make_detector, suggest_cooccurrence
from llm4dsr.io import Llm4dsrError
from llm4dsr.metrics import detection_report
from llm4dsr.scores import scores_frame, softmax
from llm4dsr.units import make_units

BOOT = {"resamples": 200, "level": 0.95}  # config intervals (fewer replicates: tests)

HALF = 20  # items 1..20 and 21..40 are the two communities of denoise_synth
THRESHOLD = {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 90}


@pytest.fixture(scope="module")
def data():
    seq, win = make_log(n_users=40, length=20, half=HALF, rate=0.1)
    return seq, win, make_units(seq, win, "history", 10)


def unit(user, items):
    return pd.DataFrame({"unit": [0], "user": [user], "split": ["test"], "window": [0],
                         "positions": [list(range(len(items)))], "items": [items], "noise": [[0] * len(items)]})


def test_cooccurrence_finds_the_other_community(data):
    seq, _, units = data
    det = Cooccurrence().fit(seq, 2 * HALF)
    report = detection_report(units, {"cooccurrence": scores_frame(units, det.score(units))}, THRESHOLD, BOOT, 0)
    train = report["cooccurrence"]["train"]
    assert train["top1"] > 0.9 and train["roc_auc"] > 0.85
    planted = unit(0, [1, 2, 3, 4, 5, 33, 6, 7])  # user 0 draws from community 1..20
    assert int(np.argmax(det.score(planted)[0])) == 5


def test_leave_one_user_out(data):
    seq, _, _ = data
    # item 41 is seen by user 0 only: its own history must not make it look common
    seq = pd.concat([seq, pd.DataFrame([dict(user=0, pos=99, timestamp=0, item=41, item_clean=41, noise=0,
                                             split="train")] * 3)], ignore_index=True)
    pop = Popularity().fit(seq, 41)
    assert pop.score(unit(0, [1, 41]))[0][1] == 0.0  # -log(1 + 0)
    assert pop.score(unit(1, [1, 41]))[0][1] == pytest.approx(-np.log(4))


def test_popularity_flags_the_unseen_item(data):
    seq, _, _ = data
    logp = Popularity().fit(seq, 50).score(unit(3, [2, 4, 45, 6]))[0]
    assert int(np.argmax(logp)) == 2


def test_idtransformer_learns_the_task(data):
    seq, _, units = data
    det = IdTransformer(seed=0, steps=150).fit(seq, 2 * HALF)
    scores = scores_frame(units, det.score(units))
    assert all(np.isclose(np.exp(x).sum(), 1) for x in scores["logp"])  # log-softmax over positions
    assert detection_report(units, {"idtransformer": scores}, THRESHOLD, BOOT, 0)["idtransformer"]["train"]["top1"] > 0.6
    once, again = (IdTransformer(seed=1, steps=10).fit(seq, 2 * HALF).score(units.head(5)) for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(once, again))


def test_suggester_picks_a_community_item_not_in_the_unit(data):
    seq, _, units = data
    det = Cooccurrence().fit(seq, 2 * HALF)
    planted = unit(0, [1, 2, 3, 4, 5, 33, 6, 7])
    got = suggest_cooccurrence(det, planted, pd.DataFrame({"unit": [0], "pos": [5]}))
    assert 1 <= got[0] <= HALF and got[0] not in planted["items"][0]
    wanted = units[["unit"]].assign(pos=units["positions"].map(lambda p: p[0])).head(20)
    for u, new in zip(wanted["unit"], suggest_cooccurrence(det, units, wanted)):
        assert new not in units.set_index("unit").at[u, "items"]


def test_scores_format_and_registry(data):
    _, _, units = data
    probs = softmax([np.array([0.0, 1.0, 2.0]), np.array([-1000.0, 0.0])])
    assert all(np.isclose(p.sum(), 1) for p in probs) and probs[1][1] == pytest.approx(1)
    frame = scores_frame(units.head(2), [np.zeros(len(i)) for i in units["items"].head(2)])
    assert list(frame.columns) == ["unit", "probs", "logp"]
    with pytest.raises(Llm4dsrError, match="unknown detector"):
        make_detector("oracle")
    assert isinstance(make_detector("idtransformer", seed=1, threads=1), IdTransformer)


def poisoned(seq: pd.DataFrame) -> pd.DataFrame:
    """The same log with every valid and test interaction replaced by another item: what a
    detector fitted on the train period only never sees."""
    held = ~seq["split"].isin(("train", "none"))
    out = seq.copy()
    out.loc[held, "item"] = (seq.loc[held, "item"] + 7) % (2 * HALF) + 1
    assert held.sum() > 50 and (out["item"] != seq["item"]).sum() == held.sum()
    return out


@pytest.mark.parametrize("name", ["popularity", "cooccurrence", "idtransformer"])
def test_detectors_see_only_the_train_period(data, name):
    """Guard: a detector fitted on every split leaks valid/test data into the comparison.
    Fitted on a log whose valid/test rows are poisoned, it must give the same scores."""
    seq, _, units = data
    kw = {"steps": 30} if name == "idtransformer" else {}

    def scores(log):
        det = make_detector(name, seed=3)
        for k, v in kw.items():
            setattr(det, k, v)
        return det.fit(log, 2 * HALF).score(units)

    clean, dirty = scores(seq), scores(poisoned(seq))
    assert len(clean) == len(units) and all(np.array_equal(a, b) for a, b in zip(clean, dirty))


# llm_embedding: the LLM's title embeddings

def _unit_embeddings(rows: list[list[float]]) -> np.ndarray:
    e = np.asarray([[0.0] * len(rows[0]), *rows], dtype=np.float32)  # row 0: padding
    n = np.linalg.norm(e, axis=1, keepdims=True)
    return e / np.where(n > 0, n, 1)


def test_llm_embedding_scores_the_item_far_from_its_history_highest():
    # items 1-3 point one way, item 4 the other: in any unit, item 4 is the odd one out
    emb = _unit_embeddings([[1, 0.1], [1, 0.2], [1, -0.1], [-0.2, 1], [1, 0.1]])
    det = make_detector("llm_embedding", embeddings=emb).fit(pd.DataFrame(), 5)
    units = pd.DataFrame({"unit": [0, 1, 2, 3, 4], "items": [[1, 2, 4, 3], [4, 1], [1, 5], [2], [4, 4, 1]]})
    s = det.score(units)
    assert int(np.argmax(s[0])) == 2 and s[0][2] > max(s[0][[0, 1, 3]]) + 0.5
    expected = -np.mean([emb[4] @ emb[k] for k in (1, 2, 3)])  # minus the mean cosine to the others
    assert s[0][2] == pytest.approx(expected, abs=1e-6)
    assert s[1][0] == pytest.approx(s[1][1])  # two items: the same similarity each way
    assert s[2][0] == pytest.approx(s[2][1]) == pytest.approx(-1.0, abs=1e-6)  # identical embeddings
    assert list(s[3]) == [0.0]  # nothing to compare with
    assert s[4][0] == s[4][1] == pytest.approx(-(emb[4] @ emb[1]), abs=1e-6)  # a copy of itself does not count


def test_llm_embedding_needs_its_embeddings():
    with pytest.raises(Llm4dsrError, match="llm_embedding: needs the embeddings of items 1..5"):
        make_detector("llm_embedding").fit(pd.DataFrame(), 5)


def test_embeddings_file_errors_name_the_file(tmp_path):
    from llm4dsr.embed import read_embeddings

    path = tmp_path / "items.parquet"
    pd.DataFrame({"item": [1, 2], "embedding": [np.ones(4, np.float32)] * 2}).to_parquet(path)
    assert read_embeddings(path, 2).shape == (3, 4)
    with pytest.raises(Llm4dsrError, match=r"items.parquet: embeddings of items 1..3 expected"):
        read_embeddings(path, 3)
    pd.DataFrame({"item": [1, 2], "embedding": [np.ones(4), np.ones(3)]}).to_parquet(path)
    with pytest.raises(Llm4dsrError, match="items.parquet: embeddings of different lengths"):
        read_embeddings(path, 2)
    path.write_text("not parquet")
    with pytest.raises(Llm4dsrError, match="items.parquet: not a readable Parquet file"):
        read_embeddings(path, 2)


def test_embed_stage_embeds_every_title_with_the_gguf_model(tiny, tmp_path):
    from llm4dsr import embed
    from llm4dsr.embed import read_embeddings

    titles = ["Toy Story (1995)", "Heat (1995)", "Toy Story 2 (1999)", "Casino (1995)"]
    pd.DataFrame({"item": [1, 2, 3, 4], "title": titles, "count": 1}).to_parquet(tmp_path / "items.parquet")
    llm_cfg = {"base_model": str(tiny.gguf_path), "gguf_file": None}
    stats = embed.run(tmp_path / "items.parquet", llm_cfg, tmp_path / "emb.parquet", threads=1)
    emb = read_embeddings(tmp_path / "emb.parquet", 4)
    assert stats["items"] == 4 and emb.shape == (5, stats["dim"]) and np.allclose(np.linalg.norm(emb[1:], axis=1), 1)
    # the same text embeds to the same vector; different titles to different ones
    again = embed.TitleEmbedder(tiny.gguf_path, None, 1)([titles[2], titles[0]])
    assert np.allclose(again[1] / np.linalg.norm(again[1]), emb[1], atol=1e-5)
    assert not np.allclose(emb[1], emb[2])
    with pytest.raises(Llm4dsrError, match="not a GGUF"):
        embed.run(tmp_path / "items.parquet", llm_cfg, tmp_path / "x.parquet", model=tmp_path / "items.parquet")
    assert not (tmp_path / "x.parquet").exists()
