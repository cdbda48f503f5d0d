"""Teaching the LLM to rank: answer tokens as training builds them, calibrated title scores (mean, sum, PMI with a
stored prior), training groups that never see their own future, and the group-softmax objective."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amazon_llm_rec.core.errors import ConfigError
from amazon_llm_rec.core.llm import scoring
from amazon_llm_rec.core.llm.models import history_input, render_prompt
from amazon_llm_rec.pipelines.prompt_engineering import nodes as pe
from tests.conftest import base_params, serving_settings

from .test_fusion import PROMPTS, _world

ZEPHYR = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def _sentencepiece_tokenizer():
    """A SentencePiece-style BPE (Metaspace word boundaries, TinyLlama's chat template) trained here on a few lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    corpus = ["Cordless drill with two batteries", "Safety gloves for welding", "Purchase history:",
              "Name the product they will buy next.", "Lab beaker 500ml glass", "1. 2. 3. 4. x"] * 20
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>",
                                                                   "<|system|>"])
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")
    fast.chat_template = ZEPHYR
    return fast


def test_answer_tokens_are_the_tail_training_builds_not_the_title_tokenised_alone():
    tok = _sentencepiece_tokenizer()
    tails = scoring.AnswerTokens(tok)
    instruction = "Name the product they will buy next."
    user = history_input(["Safety gloves for welding", "Lab beaker 500ml glass"])  # not the tails' own history
    for answer in ("Cordless drill with two batteries", "Safety gloves"):
        prompt = tok(render_prompt(tok, instruction, user), add_special_tokens=False)["input_ids"]
        full = tok(tok.apply_chat_template([{"role": "system", "content": instruction}, {"role": "user", "content": user},
                                            {"role": "assistant", "content": answer}], tokenize=False),
                   add_special_tokens=False)["input_ids"]
        assert full[: len(prompt)] == prompt
        assert tails(instruction, answer) == full[len(prompt):]  # what TRL trains: the answer and its end tokens
        alone = tok(answer, add_special_tokens=False)["input_ids"]
        # the SentencePiece trap: alone, the answer starts with a word-boundary piece training never produced
        assert tok.convert_ids_to_tokens(alone)[0].startswith("▁")
        assert alone != tails(instruction, answer)[: len(alone)]
        assert tok.convert_ids_to_tokens(tails(instruction, answer))[-2:] == ["</s>", tok.convert_ids_to_tokens(
            tok("\n", add_special_tokens=False)["input_ids"])[-1]]


def test_title_scores_sum_mean_and_pmi_against_a_full_forward_pass(tiny_llama):
    import torch

    from amazon_llm_rec.core.llm.models import load_model, load_tokenizer

    tok, model = load_tokenizer(tiny_llama), load_model(tiny_llama)
    prompts = pd.DataFrame({"instruction": "Name the next product.",
                            "input": [history_input(["drill bits", "safety gloves"]), history_input(["beaker"])]})
    answers = [["cordless drill", "hammer", "test tubes"], ["pipette tips", "beaker 250ml", "wrench"]]
    sums, counts = scoring.answer_likelihoods(model, tok, prompts, 2, "t", None, answers, 2)
    tails = scoring.AnswerTokens(tok)
    for i in range(2):
        ids = tok(render_prompt(tok, prompts["instruction"][i], prompts["input"][i]), add_special_tokens=False)["input_ids"]
        for j in range(3):
            tail = tails(prompts["instruction"][i], answers[i][j])
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids + tail])).logits[0].float(), -1)
            want = sum(float(logp[len(ids) - 1 + q, t]) for q, t in enumerate(tail))
            assert sums[i, j] == pytest.approx(want, abs=1e-3) and counts[i, j] == len(tail)
    priors = scoring.title_priors(model, tok, "Name the next product.", [a for row in answers for a in row], per_prompt=4)
    empty = pd.DataFrame({"instruction": ["Name the next product."] * 2, "input": history_input([])})
    np.testing.assert_allclose(priors.reshape(2, 3), scoring.answer_likelihoods(model, tok, empty, 2, "t", None,
                                                                                answers, None)[0], atol=1e-3)
    pmi = scoring.score_titles(model, tok, prompts, 2, answers=answers, title_score="pmi", priors=priors.reshape(2, 3))
    np.testing.assert_allclose(pmi, sums - priors.reshape(2, 3), atol=1e-3)
    np.testing.assert_allclose(scoring.score_titles(model, tok, prompts, 2, answers=answers), sums / counts, atol=1e-4)
    with pytest.raises(ConfigError, match="pmi needs"):
        scoring.score_titles(model, tok, prompts, 2, answers=answers, title_score="pmi")
    with pytest.raises(ConfigError, match="title_score"):
        scoring.calibrate(sums, counts, "median")


GROUPS = {"objective": "group_softmax", "group_softmax": {"group_size": 5, "hard_fraction": 0.5, "offset": True,
                                                           "max_groups": None}}
EVALUATION = {"fusion": {"features": ["llm", "cooccurrence", "popularity", "bm25"], "l2": 1e-3}}


def _groups(seqs, items):
    params = {**PROMPTS, "num_negatives": 3}
    windows = pe.build_windows(seqs, params)
    rendered = pe.render_prompts(pe.sample_candidates(windows, seqs, params), items, params)
    train, val, test = pe.split_prompts(rendered)
    return pe.build_training_groups(train, val, test, seqs, items, params, GROUPS, EVALUATION), train


def test_training_groups_hold_the_truth_first_unbought_negatives_and_ignore_the_future():
    seqs, items = _world(60)
    groups, train = _groups(seqs, items)
    assert len(groups) == train["reviewer_id"].nunique()
    last = train.groupby("reviewer_id")["position"].max()
    assert (groups.set_index("reviewer_id")["position"] == last.loc[groups["reviewer_id"]]).all()
    seq_of = dict(zip(seqs["reviewer_id"], seqs["asins"], strict=True))
    for rid, pos, cands, target in zip(groups["reviewer_id"], groups["position"], groups["candidate_asins"],
                                       groups["target_asin"], strict=True):
        assert cands[0] == target and len(set(cands)) == 5 and not set(cands[1:]) & set(seq_of[rid][:pos + 1])
    # hard negatives come from the same product family as the history (the co-occurrence retriever's top wrong ones)
    fam = [c[1][0] == h[0][0] for c, h in zip(groups["candidate_asins"], groups["history_asins"], strict=True)]
    assert np.mean(fam) > 0.9
    assert np.isfinite(np.stack(groups["offset"].to_list())).all()
    # poison each group reviewer's target and later events: negatives and offsets stay the same
    first = groups.set_index("reviewer_id")["position"].to_dict()
    poisoned = seqs.assign(asins=[list(a)[: first[r]] + ["Q7", "P7", "Q6"][: len(a) - first[r]] if r in first
                                  else list(a) for r, a in zip(seqs["reviewer_id"], seqs["asins"], strict=True)])
    train_p = train.copy()  # the same windows, read from the poisoned world
    again = pe.build_training_groups(train_p, *_splits(poisoned, items)[1:], poisoned, items, {**PROMPTS}, GROUPS,
                                     EVALUATION)
    pd.testing.assert_series_equal(again["offset"].map(tuple), groups["offset"].map(tuple))
    assert again["candidate_asins"].map(tuple).tolist() == groups["candidate_asins"].map(tuple).tolist()
    # the control: poisoning events before the window does move the counts
    early = seqs.assign(asins=[["P5", *list(a)[1:]] for a in seqs["asins"]])
    moved = pe.build_training_groups(train, *_splits(early, items)[1:], early, items, {**PROMPTS}, GROUPS, EVALUATION)
    assert moved["offset"].map(tuple).tolist() != groups["offset"].map(tuple).tolist()


def test_training_groups_come_before_the_reviewers_held_out_windows_under_paper_random():
    seqs, items = _world(60)
    params = {**PROMPTS, "split": "paper_random", "paper_fractions": [0.6, 0.2, 0.2]}
    windows = pe.build_windows(seqs, params)
    train, val, test = pe.split_prompts(pe.render_prompts(pe.sample_candidates(windows, seqs, params), items, params))
    groups = pe.build_training_groups(train, val, test, seqs, items, params, GROUPS, EVALUATION)
    held = pd.concat([val, test]).groupby("reviewer_id")["position"].min()
    late = train["position"].to_numpy() > train["reviewer_id"].map(held).fillna(99).to_numpy()
    assert late.any()  # some training windows come after a held-out one: the groups must skip them
    first = groups["reviewer_id"].map(held).fillna(99).to_numpy()
    assert (groups["position"].to_numpy() < first).all()


def _splits(seqs, items):
    windows = pe.build_windows(seqs, PROMPTS)
    return pe.split_prompts(pe.render_prompts(pe.sample_candidates(windows, seqs, PROMPTS), items, PROMPTS))


def test_training_groups_refuse_option_prompts_and_stay_empty_for_the_lm_objective():
    seqs, items = _world(30)
    train, val, test = _splits(seqs, items)
    assert pe.build_training_groups(train, val, test, seqs, items, PROMPTS, {"objective": "lm"}, EVALUATION).empty
    with pytest.raises(ConfigError, match="pointwise"):
        pe.build_training_groups(train.assign(style="options"), val, test, seqs, items, PROMPTS, GROUPS, EVALUATION)


def test_group_softmax_training_learns_to_rank_the_truth_first(tiny_llama, tmp_path):
    from amazon_llm_rec.core.llm.group_training import group_logits, train_group_softmax

    seqs, items = _world(40)
    groups, _ = _groups(seqs, items)
    groups = groups.head(8).assign(offset=[[0.0] * 5] * 8)  # no offset: the LLM alone must learn it
    priors = pd.DataFrame({"asin": items["asin"], "prior": 0.0})
    ft = {"backend": "lora", "device": "cpu", "bf16": False, "epochs": 1, "max_steps": 40, "learning_rate": 1e-2,
          "weight_decay": 0.0, "warmup_ratio": 0.0, "seed": 0, "logging_steps": 4, "save_steps": 8,
          "checkpoint_dir": str(tmp_path), "resume": True, "gradient_checkpointing": False, "max_grad_norm": 1.0,
          "group_softmax": {"windows_per_step": 4, "offset": False, "hard_fraction": 0.5, "max_minutes": None},
          "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "o_proj"]}}
    adapter, history = train_group_softmax(tiny_llama, groups, priors, ft, "pmi")
    assert adapter.summary["steps"] == 40 and adapter.summary["windows_seen"] == 160
    assert history["loss"].iloc[-1] < 0.5 * history["loss"].iloc[0]
    import torch

    with torch.no_grad():
        logits = group_logits(adapter.model, adapter.tokenizer, scoring.AnswerTokens(adapter.tokenizer), groups,
                              np.zeros((8, 5)), np.zeros((8, 5)), "pmi")
    assert (logits.argmax(-1) == 0).float().mean() >= 0.75
    # the evaluation's scoring (score_titles, pmi) ranks the same way: scored as trained
    scored = scoring.score_titles(adapter.model, adapter.tokenizer, groups, 4, answers=groups["candidate_titles"].tolist(),
                                  title_score="pmi", priors=np.zeros((8, 5)))
    np.testing.assert_allclose(scored, logits.numpy(), atol=1e-3)
    # resuming a finished run trains no further step, and loads the trained adapter
    again, _ = train_group_softmax(tiny_llama, groups, priors, ft, "pmi")
    assert again.summary["steps"] == 40 and again.summary["train_seconds"] < adapter.summary["train_seconds"]
    with torch.no_grad():
        resumed = group_logits(again.model, again.tokenizer, scoring.AnswerTokens(again.tokenizer), groups,
                               np.zeros((8, 5)), np.zeros((8, 5)), "pmi")
    np.testing.assert_allclose(resumed.numpy(), logits.numpy(), atol=1e-4)
    with pytest.raises(ConfigError, match="checkpointing"):
        train_group_softmax(tiny_llama, groups, priors, {**ft, "gradient_checkpointing": True}, "pmi")


def test_the_service_computes_the_evaluations_features_for_a_test_window(tiny_llama):
    """Parity: the service (`RecommenderService`, fit_on before_test) and the evaluation (`candidate_features`, the
    LLM's pmi score by `_score_model`) give one test window's candidates the same features."""
    from amazon_llm_rec.core.llm.models import load_model, load_tokenizer
    from amazon_llm_rec.core.rank import fusion
    from amazon_llm_rec.pipelines.evaluation import nodes as ev
    from amazon_llm_rec.serving.config import ProjectData
    from amazon_llm_rec.serving.service import RecommenderService

    seqs, items = _world(40)
    train, val, test = _splits(seqs, items)
    names = ["cooccurrence", "cooccurrence_all", "popularity", "bm25", "embedding"]
    evaluation = base_params("evaluation", fusion={"features": ["llm", *names]}, title_score="pmi", batch_size=4,
                             bf16=False, device="cpu", exact_match_max_prompts=0)
    offline = fusion.candidate_features(test, seqs, ev.fit_evidence(test, seqs, items, evaluation), names)
    model, tok = load_model(tiny_llama), load_tokenizer(tiny_llama)
    priors = pd.DataFrame({"asin": items["asin"], "prior": scoring.title_priors(model, tok, test["instruction"].iloc[0],
                                                                                items["title"].tolist())})
    llm = ev._score_model("zero_shot", model, tok, test, evaluation, "title", generate=False, title_priors=priors)
    fitted = {"features": ["llm", *names], "weights": [1.0] * 6, "mean": [0.0] * 6, "scale": [1.0] * 6}
    data = ProjectData(items=items, sequences=seqs, test_prompts=test, fusion_model={"fusion": fitted}, retriever_mix=None,
                       base_model=tiny_llama, adapter=None, credentials={}, title_priors=priors,
                       params={"prompts": PROMPTS, "evaluation": evaluation,
                               "recommend": base_params("recommend", ranker="fusion", retrieval={"quotas": None},
                                                        history_size=PROMPTS["history_size"])})
    service = RecommenderService(data, serving_settings())
    seq_of = dict(zip(seqs["reviewer_id"], seqs["asins"], strict=True))
    for i in range(3):
        row = test.iloc[i]
        prefix = list(seq_of[row["reviewer_id"]])[: row["position"]]
        online = service.recommender.features([list(row["history_asins"])], [prefix], [list(row["candidate_asins"])],
                                              ["llm", *names])[0]
        np.testing.assert_allclose(online[:, 1:], np.stack([offline[n][i] for n in names], axis=1), rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(online[:, 0], llm["scores"].iloc[i], rtol=1e-4, atol=1e-3)
