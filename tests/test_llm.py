"""The LLM path on a tiny random Llama (real SmolLM2 tokenizer): fine-tuning data,
LoRA steps, resume, GGUF export (adapter and merged+quantized), llama.cpp parity,
the two scorers and constrained suggestions."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from llm4dsr import export, llm, prompts, score
from llm4dsr.finetune import examples as ft_examples, objectives, trainer
from llm4dsr.io import Llm4dsrError, read_parquet, write_parquet
from llm4dsr.llm import check_gguf, load_torch, resolve
from llm4dsr.score import LlamaScorer, score_units
from llm4dsr.suggest import Suggester

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
TITLES = {i: f"Movie {i} ({1990 + i % 20})" for i in range(1, 40)}
TITLES.update({40: "Star Wars: Episode IV", 41: "Star Wars: Episode V", 42: 'Heat "Quoted" – Ünïcode (1995)',
               43: "Casino (1995)"})


@pytest.fixture(scope="session")
def examples():
    rng = np.random.default_rng(0)
    hist = [list(rng.choice(np.arange(1, 40), size=6, replace=False)) for _ in range(30)]
    w = pd.DataFrame({"split": "train", "history": hist, "target": [43] * 30})  # observed items
    return ft_examples.make_examples(w, TITLES, 24, seed=1)


@pytest.fixture(scope="session")
def trained(tiny_torch, examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    model, tok = tiny_torch()
    res = trainer.train(model, tok, examples, out, lora=LORA, steps=8, batch_size=4, lr=5e-3, seed=0,
                         checkpoint_every=4, progress=False)
    return out, res


def test_examples_follow_the_paper_format(examples):
    ex = examples[0]
    assert ex["prompt"].endswith('Noise Items: "')
    noise_title, original_title = prompts.parse_response(ex["response"])
    assert noise_title == prompts.display_title(ex["candidates"][ex["noise_index"]])
    assert original_title == prompts.display_title(TITLES[ex["original"]])
    assert sum(i not in (ex["items"][ex["noise_index"]],) for i in ex["items"]) == len(ex["items"]) - 1


def test_prompt_handles_quotes_and_non_ascii():
    p = prompts.prompt([TITLES[42], TITLES[43]])
    assert "Heat 'Quoted' – Ünïcode (1995)" in p and p.count('"') == 5
    assert prompts.parse_response("no answer here") is None
    with pytest.raises(ValueError):
        prompts.prompt([])


def test_lora_loss_decreases(trained):
    out, res = trained
    assert res["last_loss"] < res["first_loss"]
    assert (out / "adapter" / "adapter_config.json").exists()
    lines = (out / "loss.tsv").read_text().splitlines()
    assert lines[0].startswith("step") and len(lines) == 9


def test_resume_after_interruption_matches_uninterrupted_run(tiny_torch, examples, tmp_path, monkeypatch):
    def lora_weights(out):
        from safetensors.torch import load_file

        return load_file(str(out / "adapter" / "adapter_model.safetensors"))

    def train(out):
        model, tok = tiny_torch()
        return trainer.train(model, tok, examples, out, lora=LORA, steps=4, batch_size=4, lr=5e-3, seed=0,
                              checkpoint_every=2, progress=False)

    train(tmp_path / "straight")
    real_save = trainer._save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(trainer, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "adapter").exists()  # nothing half-written
    monkeypatch.setattr(trainer, "_save_checkpoint", real_save)
    train(tmp_path / "resumed")
    a, b = lora_weights(tmp_path / "straight"), lora_weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    steps = [int(line.split("\t")[0]) for line in (tmp_path / "resumed" / "loss.tsv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4]


def test_a_checkpoint_of_another_recipe_is_not_resumed(tiny_torch, examples, tmp_path):
    """Checkpoints outlive a config change (they are not workflow outputs); one written
    with another LoRA rank must not be loaded into this run: it starts from step 0."""
    model, tok = tiny_torch()
    trainer.train(model, tok, examples, tmp_path, lora=LORA, steps=2, batch_size=4, lr=5e-3, seed=0,
                   checkpoint_every=2, progress=False)
    model, tok = tiny_torch()
    trainer.train(model, tok, examples, tmp_path, lora={**LORA, "r": 8}, steps=3, batch_size=4, lr=5e-3, seed=0,
                   checkpoint_every=2, progress=False)
    steps = [int(line.split("\t")[0]) for line in (tmp_path / "loss.tsv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3]


def test_unknown_target_module_is_a_clear_error(tiny_torch):
    model, _ = tiny_torch()
    with pytest.raises(Llm4dsrError, match="target_modules"):
        trainer.add_lora(model, {**LORA, "target_modules": ["no_such_proj"]})


def test_bad_model_files(tmp_path):
    with pytest.raises(Llm4dsrError, match="not found"):
        resolve(str(tmp_path / "missing.gguf"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(Llm4dsrError, match="not a GGUF"):
        check_gguf(fake)
    with pytest.raises(Llm4dsrError, match="no such file"):
        resolve(str(tmp_path / "no" / "model"))


def shared_base(mp: pytest.MonkeyPatch, tiny_torch) -> None:
    """export.run loads its base model with llm.load_torch: hand it a copy of the loaded one."""
    mp.setattr(llm, "load_torch", lambda base, dtype="float32": tiny_torch())


@pytest.fixture(scope="session")
def exported(tiny, tiny_torch, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    texts = [prompts.prompt([TITLES[i] for i in (1, 2, 3)]), prompts.prompt([TITLES[40], TITLES[42]])]
    with pytest.MonkeyPatch.context() as mp:
        shared_base(mp, tiny_torch)
        adapter = export.run(trained[0] / "adapter", tiny, "adapter", out / "a", [], texts)
        merged = export.run(trained[0] / "adapter", tiny, "merged", out / "m", ["Q8_0", "Q4_K_M"], texts)
    return out, adapter, merged


def test_adapter_route_matches_torch(exported):
    out, adapter, _ = exported
    assert adapter["ok"] and (out / "a" / "adapter.gguf").exists()
    assert all(r["corr"] > 0.9999 and r["top1_same"] for r in adapter["prompts"])


def test_merged_route_quantizes_and_matches_torch(exported):
    out, _, merged = exported
    for q, min_corr in (("Q8_0", 0.999), ("Q4_K_M", 0.98)):
        check_gguf(out / "m" / f"model-{q}.gguf")
        assert merged["quantized"][q]["ok"]
        assert all(r["corr"] > min_corr for r in merged["quantized"][q]["prompts"])


def test_merged_route_from_a_hugging_face_folder(tiny, trained, tmp_path):
    """The route a hub base takes (config/paper.yaml): a Hugging Face folder, merged, saved
    with its tokenizer, converted by llama.cpp's convert_hf_to_gguf.py, quantized."""
    model, tok = load_torch(tiny)
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    base = resolve(str(tmp_path / "hf"))
    assert base.gguf is None
    texts = [prompts.prompt([TITLES[i] for i in (1, 2, 3)], "reference")]
    report = export.run(trained[0] / "adapter", base, "merged", tmp_path / "m", ["Q8_0"], texts)
    assert report["ok"] and report["quantized"]["Q8_0"]["prompts"][0]["top1_same"]
    check_gguf(tmp_path / "m" / "model-Q8_0.gguf")


def test_parity_failure_is_loud_and_keeps_the_report(tiny, tiny_torch, trained, tmp_path, monkeypatch):
    shared_base(monkeypatch, tiny_torch)
    monkeypatch.setattr(export, "parity", lambda *a, **k: {"ok": False, "prompts": []})
    with pytest.raises(Llm4dsrError, match="disagree"):
        export.run(trained[0] / "adapter", tiny, "adapter", tmp_path, [], ["x"])
    assert (tmp_path / "parity.json").exists()


@pytest.fixture(scope="session")
def scorer(tiny, exported):
    return LlamaScorer(tiny.gguf_path, exported[0] / "a" / "adapter.gguf", threads=2)


def test_full_title_matches_torch_likelihood(tiny_torch, trained, scorer):
    """full_title = log-likelihood of the title's tokens after the prompt, as torch computes it."""
    from peft import PeftModel

    model, tok = tiny_torch()
    model = PeftModel.from_pretrained(model, str(trained[0] / "adapter")).eval()
    names = [TITLES[i] for i in (3, 40, 42)]
    got = scorer.score(names, ("first_token", "full_title"))
    first, full = got["first_token"], got["full_title"]
    ptoks = scorer.prompt_tokens(prompts.prompt(names))
    for k, name in enumerate(names):
        ctoks = scorer.title_tokens(name)
        ids = torch.tensor([ptoks + ctoks])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0].double(), -1)
        steps = [lp[len(ptoks) - 1 + j, t].item() for j, t in enumerate(ctoks)]
        assert math.isclose(first[k], steps[0], abs_tol=2e-3)
        assert math.isclose(full[k], sum(steps), abs_tol=1e-2)


def test_logits_are_recomputed_where_the_cached_prefix_has_none(tiny, exported, scorer):
    """Prompts are evaluated with the output layer on their last token only; positions
    that are asked for later (``logits_from``) and were cached without logits must be
    recomputed, not read from whatever an earlier context left there."""
    toks = scorer.prompt_tokens(prompts.prompt([TITLES[1], TITLES[2]])) + scorer.title_tokens(TITLES[40])
    start = len(toks) - len(scorer.title_tokens(TITLES[40]))
    fresh = LlamaScorer(tiny.gguf_path, exported[0] / "a" / "adapter.gguf", threads=2)
    fresh.eval_tokens(toks, logits_from=start)
    other = scorer.prompt_tokens(prompts.prompt([TITLES[7], TITLES[8], TITLES[9]]))
    scorer.eval_tokens(other + other, logits_from=0)  # other logits at every position
    scorer.eval_tokens(toks)  # the same tokens, logits of the last one only
    scorer.eval_tokens(toks, logits_from=start)
    np.testing.assert_allclose(scorer.llm.scores[start:len(toks)], fresh.llm.scores[start:len(toks)], atol=1e-3)


def test_first_token_ties_shared_prefixes_full_title_and_trie_separate(scorer):
    names = [TITLES[40], TITLES[41], TITLES[5]]
    got = scorer.score(names, ("first_token", "trie", "full_title"))
    first, trie, full = got["first_token"], got["trie"], got["full_title"]
    assert first[0] == first[1]  # "Star Wars: Episode IV" / "... V" share their first token
    assert full[0] != full[1] and trie[0] != trie[1]


def test_trie_score_is_restricted_decoding_of_the_history_titles(tiny_torch, trained, scorer):
    """trie = log P(decoding restricted to the unit's titles writes the title): at each
    branching position, the model's probability renormalised over the titles' next tokens,
    as torch computes it token by token; the titles' probabilities sum to 1; where first
    tokens differ it orders titles as first_token does."""
    from peft import PeftModel

    model, tok = tiny_torch()
    model = PeftModel.from_pretrained(model, str(trained[0] / "adapter")).eval()
    names = [TITLES[i] for i in (40, 41, 5, 3)]
    got = scorer.score(names, ("first_token", "trie"))
    ptoks = scorer.prompt_tokens(prompts.prompt(names))
    seqs = [scorer.title_tokens(n) for n in names]
    for k, seq in enumerate(seqs):
        expected = 0.0
        for j, t in enumerate(seq):
            nexts = sorted({s[j] for s in seqs if len(s) > j and s[:j] == seq[:j]})
            if len(nexts) == 1:
                continue  # nothing to choose here
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ptoks + seq[:j]])).logits[0, -1].double(), -1)
            expected += (lp[t] - torch.logsumexp(lp[nexts], 0)).item()
        assert math.isclose(got["trie"][k], expected, abs_tol=2e-3)
    assert math.isclose(np.exp(got["trie"]).sum(), 1.0, abs_tol=1e-6)
    distinct = [2, 3]  # first tokens unshared by the other titles: same order as first_token
    assert (np.argsort(got["trie"][distinct]) == np.argsort(got["first_token"][distinct])).all()


def test_trie_score_asks_the_model_only_where_titles_branch(scorer):
    """Distinct first tokens: the prompt alone, no further evaluation; a shared prefix:
    one more evaluation per branching node, not one per title token."""
    distinct = [TITLES[i] for i in (40, 42, 43)]
    assert len({scorer.title_tokens(t)[0] for t in distinct}) == 3
    scorer.score(distinct, ("first_token",))
    before = scorer.tokens_evaluated
    scorer.score(distinct, ("trie",))
    assert scorer.tokens_evaluated == before + 1  # the same prompt: only its last token is re-evaluated
    shared = [TITLES[40], TITLES[41], TITLES[43]]
    scorer.score(shared, ("first_token",))
    before = scorer.tokens_evaluated
    scorer.score(shared, ("trie",))
    a, b = scorer.title_tokens(TITLES[40]), scorer.title_tokens(TITLES[41])
    branch = next(j for j in range(min(len(a), len(b))) if a[j] != b[j])
    assert scorer.tokens_evaluated - before <= 1 + branch  # the prompt's last token + the shared prefix


def test_score_units_probabilities_and_suggestions(scorer):
    units = pd.DataFrame({"unit": [0, 1, 2], "split": ["train", "test", "test"],
                          "items": [[1, 2, 40, 41], [42, 5], []]})
    sugg = Suggester(scorer, TITLES)
    tables, suggestions, stats = score_units(scorer, units, TITLES, ("trie", "first_token", "full_title"), sugg,
                                             top_k=2, progress=False)
    assert stats["skipped_empty"] == 1 and all(len(t) == 2 for t in tables.values())
    for df in tables.values():
        for probs in df["probs"]:
            assert math.isclose(sum(probs), 1.0, rel_tol=1e-9)
    assert len(suggestions) == 4
    for unit, item, title in zip(suggestions["unit"], suggestions["item"], suggestions["title"]):
        assert TITLES[item] == title  # a real catalogue item ...
        assert item not in units["items"][unit]  # ... never one already in the history


def test_score_run_writes_each_suggestion_at_the_position_it_replaces(tiny, tmp_path):
    """Guard: correction replaces the item at a suggestion's `pos`; that must be the
    position of the suspect the suggestion was decoded for (the rank-th most probable
    noise item of its unit, by the written full-title scores). Unit ids and positions
    here are neither 0.. nor equal to the index in the unit."""
    units = pd.DataFrame({"unit": [3, 8], "user": [0, 1], "split": ["train", "test"], "window": [-1, 5],
                          "positions": [[4, 5, 6, 7], [10, 11, 12]], "items": [[1, 40, 42, 7], [41, 5, 43]],
                          "noise": [[0] * 4, [0] * 3]})
    write_parquet(units, tmp_path / "units.parquet")
    write_parquet(pd.DataFrame({"item": list(TITLES), "title": list(TITLES.values()),
                                "raw_id": [str(i) for i in TITLES], "count": 1}), tmp_path / "items.parquet")
    out = {k: tmp_path / f"{k}.parquet" for k in ("full", "first", "suggestions")}
    score.run(tmp_path / "units.parquet", tmp_path / "items.parquet", {}, model=tiny.gguf_path,
              suggest_cfg={"top_k": 2, "decoding": "trie", "max_tokens": 20}, methods=("full_title", "first_token"),
              out_scores=[out["full"], out["first"]], out_suggestions=out["suggestions"],
              out_stats=tmp_path / "stats.json", threads=2)
    full = read_parquet(out["full"]).set_index("unit")
    got = read_parquet(out["suggestions"]).sort_values(["unit", "rank"])
    expected = []
    for u, positions, items in zip(units["unit"], units["positions"], units["items"]):
        order = np.argsort(-np.asarray(full.at[u, "logp"]), kind="stable")[:2]
        assert len(set(np.asarray(full.at[u, "logp"])[order])) == 2  # no tie: the ranking is unambiguous
        expected += [(u, rank, positions[k]) for rank, k in enumerate(order)]
    assert list(got[["unit", "rank", "pos"]].itertuples(index=False, name=None)) == expected
    by_unit = units.set_index("unit")
    assert all(item not in by_unit.at[u, "items"] for u, item in zip(got["unit"], got["item"]))


def test_trie_decoding_only_yields_catalogue_titles(scorer):
    sugg = Suggester(scorer, TITLES)
    for k in range(3):
        item, title = sugg.suggest([TITLES[i] for i in (1, 2, 3)], k, exclude={1, 2, 3})
        assert item in TITLES and item not in (1, 2, 3)


def test_greedy_decoding_grounds_unknown_titles(scorer):
    sugg = Suggester(scorer, TITLES, decoding="greedy", max_tokens=8)
    item, title = sugg.suggest([TITLES[i] for i in (1, 2, 3)], 0, exclude={1, 2, 3})
    assert item in TITLES and TITLES[item] == title
    assert sugg.unparsed == 1  # a random model does not write a catalogue title: counted, then grounded


def test_packed_candidate_likelihoods_match_separate_passes(tiny_torch, examples):
    """One packed forward pass (4D mask, restarted positions) scores every title exactly as
    a separate pass of prompt + title would."""
    model, tok = tiny_torch()
    peft_model = trainer.add_lora(model, LORA).eval()
    packed = objectives.tokenize_candidates(examples[:2], tok, 4096)
    with torch.no_grad():
        sums = objectives.branch_logliks(peft_model, packed, [0, 1], tok.eos_token_id)[0]
        for b, ex in enumerate(packed):
            for k, br in enumerate(ex["branches"]):
                ids = torch.tensor([ex["prompt"] + br])
                lp = torch.log_softmax(peft_model(ids).logits[0].float(), -1)
                ref = sum(lp[len(ex["prompt"]) - 1 + j, t].item() for j, t in enumerate(br))
                assert math.isclose(sums[b, k].item(), ref, rel_tol=1e-4, abs_tol=1e-3)


def test_candidates_objective_learns_and_writes_a_learning_curve(tiny_torch, examples, tmp_path):
    model, tok = tiny_torch()
    held = [{k: ex[k] for k in ("prompt", "candidates", "noise_index")} for ex in examples[-6:]]
    # one batch holds every example, so each step sees the same data and the loss must fall
    res = trainer.train(model, tok, examples[:6], tmp_path, lora=LORA, steps=6, batch_size=6, lr=5e-3,
                         seed=0, checkpoint_every=3, progress=False, objective="candidates", heldout=held,
                         eval_every=3)
    assert res["last_loss"] < res["first_loss"]
    curve = pd.read_csv(tmp_path / "learning_curve.tsv", sep="\t")
    assert curve["step"].tolist() == [0, 3, 6] and curve["examples_seen"].tolist() == [0, 18, 36]
    assert curve["top1"].between(0, 1).all() and curve["roc_auc"].between(0, 1).all()


def test_micro_batches_accumulate_to_the_full_batch_gradient(tiny_torch, examples, tmp_path):
    from safetensors.torch import load_file

    def weights(micro):
        model, tok = tiny_torch()
        trainer.train(model, tok, examples[:8], tmp_path / str(micro), lora=LORA, steps=2, batch_size=4, lr=5e-3,
                       seed=0, progress=False, objective="candidates", micro_batch_size=micro)
        return load_file(str(tmp_path / str(micro) / "adapter" / "adapter_model.safetensors"))

    whole, micro = weights(None), weights(2)
    for k in whole:
        torch.testing.assert_close(whole[k], micro[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("objective", ["candidates", "generate"])
def test_bf16_autocast_trains_close_to_fp32_but_in_bf16(tiny_torch, examples, tmp_path, objective):
    """finetune.autocast bf16: the loss still falls, the adapter stays fp32 and near the fp32
    run's, yet differs from it (the forward pass really ran in bfloat16)."""
    from safetensors.torch import load_file

    def run(autocast):
        model, tok = tiny_torch()
        res = trainer.train(model, tok, examples[:6], tmp_path / autocast, lora=LORA, steps=4, batch_size=6,
                            lr=5e-3, seed=0, progress=False, objective=objective, autocast=autocast)
        return res, load_file(str(tmp_path / autocast / "adapter" / "adapter_model.safetensors"))

    (fp32, w32), (bf16, w16) = run("none"), run("bf16")
    assert bf16["last_loss"] < bf16["first_loss"]
    assert math.isclose(bf16["first_loss"], fp32["first_loss"], rel_tol=0.05)
    assert fp32["first_loss"] != bf16["first_loss"]
    for k in w32:
        assert w16[k].dtype == torch.float32
        torch.testing.assert_close(w16[k], w32[k], rtol=0.1, atol=2e-2)


def test_autocast_auto_is_bf16_only_where_the_cpu_has_native_bf16(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("auto follows the GPU there")
    native, plain = tmp_path / "native", tmp_path / "plain"
    native.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512vl\n")
    plain.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert trainer.resolve_autocast("auto", native) == "bf16"
    assert trainer.resolve_autocast("auto", plain) == "none"
    assert trainer.resolve_autocast("auto", tmp_path / "missing") == "none"
    assert trainer.resolve_autocast("none", native) == "none" and trainer.resolve_autocast("bf16", plain) == "bf16"


@pytest.mark.slow  # loads the real Gemma-3-270M (about a minute): pytest -m slow
def test_gemma3_adapter_route_matches_torch(tmp_path):
    """The second offline base model: its wheel's chunks joined into one GGUF, prompts with
    Gemma's BOS token, and a LoRA on every attention projection (Gemma's q/k rows are not
    permuted as Llama's are) that llama.cpp applies as torch does."""
    base = resolve("gemma3-270m")
    model, tok = load_torch(base)
    assert objectives.prompt_ids(tok, "x")[0] == tok.bos_token_id
    lora_cfg = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    peft_model = trainer.add_lora(model, lora_cfg)
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    lora = export.write_lora_gguf(tmp_path / "adapter.gguf", peft_model, lora_cfg["alpha"])
    text = prompts.prompt([TITLES[40], TITLES[43], TITLES[1]])
    applied = export.parity(peft_model, tok, base.gguf_path, [text], str(lora), "Q4_K_M", threads=2)["prompts"][0]
    ignored = export.parity(peft_model, tok, base.gguf_path, [text], None, "Q4_K_M", threads=2)["prompts"][0]
    assert applied["corr"] > 0.99 and applied["top1_same"]
    assert ignored["corr"] < applied["corr"]  # the adapter changes the logits, in the same way in both engines


def test_a_curve_column_first_measured_after_a_resume_is_kept(tiny_torch, examples, tmp_path):
    """A run resumed from a checkpoint written before a curve column existed: the column is
    written (empty on the rows measured before), not dropped because the first row lacks it."""
    model, tok = tiny_torch()
    held = [{k: ex[k] for k in ("prompt", "candidates", "noise_index")} for ex in examples[-4:]]
    trainer.train(model, tok, examples[:6], tmp_path, lora=LORA, steps=4, batch_size=3, lr=5e-3, seed=0,
                  checkpoint_every=2, progress=False, objective="candidates", heldout=held, eval_every=2,
                  on_eval=lambda step, m: {"extra": 0.5} if step > 0 else {})
    curve = pd.read_csv(tmp_path / "learning_curve.tsv", sep="\t")
    assert curve["step"].tolist() == [0, 2, 4] and "extra" in curve.columns
    assert curve["extra"].isna().tolist() == [True, False, False]


def test_a_checkpoint_without_the_curve_asked_now_is_not_resumed(tiny_torch, examples, tmp_path):
    """The curve's points are measured while training: a checkpoint of a run that measured
    another curve (here none) cannot supply them, so the run starts from step 0."""
    model, tok = tiny_torch()
    trainer.train(model, tok, examples[:6], tmp_path, lora=LORA, steps=2, batch_size=3, lr=5e-3, seed=0,
                  checkpoint_every=2, progress=False, objective="candidates")
    held = [{k: ex[k] for k in ("prompt", "candidates", "noise_index")} for ex in examples[-4:]]
    model, tok = tiny_torch()
    trainer.train(model, tok, examples[:6], tmp_path, lora=LORA, steps=2, batch_size=3, lr=5e-3, seed=0,
                  checkpoint_every=2, progress=False, objective="candidates", heldout=held, eval_every=1,
                  on_eval=lambda step, m: {"extra": 0.5}, curve_tag="extra")
    curve = pd.read_csv(tmp_path / "learning_curve.tsv", sep="\t")
    assert curve["step"].tolist() == [0, 1, 2] and curve["extra"].notna().all()
