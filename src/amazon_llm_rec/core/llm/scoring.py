"""Scoring prompts with a causal LM: one batched forward pass per prompt, next-token option logits."""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .models import LETTERS, option_token_ids, render_prompt

logger = logging.getLogger(__name__)


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _encoded_batches(model, tokenizer, prompts: pd.DataFrame, batch_size: int, desc: str,
                     pad_to_multiple_of: int | None = None):
    """Yield (row indices, left-padded encodings on the model's device), similar lengths together,
    under torch.inference_mode."""
    import torch  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    texts = [render_prompt(tokenizer, i, x) for i, x in zip(prompts["instruction"], prompts["input"], strict=True)]
    order = np.argsort([len(t) for t in texts], kind="stable")  # little padding
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    model.eval()
    with torch.inference_mode():
        for sl in tqdm(list(_batches(len(texts), batch_size)), desc=desc, leave=False, disable=None):  # no bar off a TTY
            idx = order[sl]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False,
                            pad_to_multiple_of=pad_to_multiple_of).to(device)
            yield idx, enc


def last_position_logits(model, enc):
    """Next-token logits at the last position only: the LM head runs on one position per prompt."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = getattr(base, "model", None), getattr(base, "lm_head", None)
    if body is None or head is None:  # not a *ForCausalLM with .model/.lm_head: let it compute all logits
        return model(**enc).logits[:, -1, :]
    try:
        hidden = body(**enc, use_cache=False).last_hidden_state
    except TypeError:  # a patched body (Unsloth's inference mode) with another signature
        return model(**enc).logits[:, -1, :]
    return head(hidden[:, -1, :])


def score_options(model, tokenizer, prompts: pd.DataFrame, batch_size: int = 16, desc: str = "scoring",
                  pad_to_multiple_of: int | None = None) -> np.ndarray:
    """Return log-probabilities [N, options] of each option letter as the answer's first token."""
    import torch  # noqa: PLC0415

    k = len(prompts["candidate_asins"].iloc[0])
    letter_ids = option_token_ids(tokenizer, prompts["instruction"].iloc[0], prompts["input"].iloc[0], LETTERS[:k])
    out = np.zeros((len(prompts), k), dtype=np.float32)
    for idx, enc in _encoded_batches(model, tokenizer, prompts, batch_size, desc, pad_to_multiple_of):
        logits = last_position_logits(model, enc)
        out[idx] = torch.log_softmax(logits.float(), dim=-1)[:, letter_ids].cpu().numpy()
    return out


def option_lines(prompts: pd.DataFrame) -> list[list[str]]:
    """Per prompt, its option lines ("A) title", ...): as written in the input, or, for pointwise prompts
    (no option list), from `candidate_titles`."""
    titles = prompts["candidate_titles"] if "candidate_titles" in prompts else [None] * len(prompts)
    return [x.split("Options:\n")[-1].split("\n") if "\nOptions:\n" in x or t is None
            else [f"{LETTERS[i]}) {title}" for i, title in enumerate(t)]
            for x, t in zip(prompts["input"], titles, strict=True)]


def rotate_options(prompts: pd.DataFrame, shift: int) -> pd.DataFrame:
    """The same prompts with their options moved `shift` places down, cyclically, and re-lettered.

    Scores of the rotated prompts map back to the original order with `np.roll(scores, -shift, axis=1)`."""
    inputs, outputs, cands, letters, new_titles = [], [], [], [], []
    for text, opts, letter, lines in zip(prompts["input"], prompts["candidate_asins"], prompts["correct_letter"],
                                         option_lines(prompts), strict=True):
        k = len(lines)
        titles = [line.split(") ", 1)[1] for line in lines]
        order = [(i - shift) % k for i in range(k)]  # new position i shows old option order[i]
        if "\nOptions:\n" in text:
            head = text[: text.rindex("Options:\n") + len("Options:\n")]
            inputs.append(head + "\n".join(f"{LETTERS[i]}) {titles[j]}" for i, j in enumerate(order)))
        else:  # pointwise: no option list in the prompt
            inputs.append(text)
        new_titles.append([titles[j] for j in order])
        new = (LETTERS.index(letter) + shift) % k
        letters.append(LETTERS[new])
        outputs.append(f"{LETTERS[new]}) {titles[LETTERS.index(letter)]}")
        cands.append([list(opts)[j] for j in order])
    out = prompts.assign(input=inputs, output=outputs, candidate_asins=cands, correct_letter=letters)
    if "candidate_titles" in prompts:
        out["candidate_titles"] = new_titles
    return out


def option_texts(prompts: pd.DataFrame, target: str) -> list[list[str]]:
    """Per prompt, each option's answer as the model was trained to write it."""
    options = option_lines(prompts)
    if target == "title":
        return [[o.split(") ", 1)[1] for o in opts] for opts in options]
    if target == "letter_and_title":
        return [list(opts) for opts in options]
    raise ValueError(f"title-likelihood scoring needs target 'title' or 'letter_and_title', got {target!r}")


def _cache_arg(model) -> str:
    """`cache` where the model's forward takes it (newer transformers), else `past_key_values`."""
    import inspect  # noqa: PLC0415

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


TITLE_SCORES = ("mean", "sum", "pmi")


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class AnswerTokens:
    """The tokens an answer is trained as: the tail of the tokenised prompt+answer (its end-of-answer tokens
    included) after the part it shares with the tokenised prompt, as TRL builds prompt-completion examples.

    Tokenising the answer alone is not the same under SentencePiece tokenizers (TinyLlama's): it starts the answer
    with a word-boundary token that training never produced. The tail does not depend on the history, so it is
    computed once per (instruction, answer) after a fixed history and kept."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._known: dict[tuple[str, str], list[int]] = {}
        self._prompt: dict[str, tuple[str, list[int]]] = {}

    def __call__(self, instruction: str, answer: str) -> list[int]:
        key = (instruction, answer)
        if key not in self._known:
            from .models import history_input, messages, render_prompt  # noqa: PLC0415

            if instruction not in self._prompt:
                user = history_input(["x"])
                text = render_prompt(self.tokenizer, instruction, user)
                self._prompt[instruction] = (user, self.tokenizer(text, add_special_tokens=False)["input_ids"])
            user, prompt_ids = self._prompt[instruction]
            full = self.tokenizer.apply_chat_template(messages(instruction, user, answer), tokenize=False)
            full_ids = self.tokenizer(full, add_special_tokens=False)["input_ids"]
            shared = _common_prefix(prompt_ids, full_ids)
            if shared < len(prompt_ids):
                raise ConfigError(f"the chat template renders the prompt differently when an answer follows (tokens merge "
                                  f"across the boundary after {self.tokenizer.decode(prompt_ids[shared:])!r}): scoring "
                                  "would not see what training saw; end the generation prompt on a token boundary")
            self._known[key] = full_ids[shared:]
        return self._known[key]


def prompt_pass(model, enc):
    """Run the prompts once: (their KV cache, log-probabilities of every answer's first token [batch, vocab])."""
    import torch  # noqa: PLC0415

    first = model(**enc, use_cache=True, logits_to_keep=1)
    return first.past_key_values, torch.log_softmax(first.logits[:, -1, :].float(), dim=-1)


def answer_pass(model, enc, cache, first_logp, tails: list[list[int]], width: int, pad_id: int):
    """Summed log-probability and token count of each answer [batch * width], the answers of prompt i at rows
    i * width .. (i + 1) * width - 1, continuing the prompts' KV cache (repeated `width` times, in place).
    Differentiable: training's group loss and scoring use this one function."""
    import torch  # noqa: PLC0415

    device = enc["input_ids"].device
    cache.batch_repeat_interleave(width)
    ids = torch.full((len(tails), max(len(c) for c in tails)), pad_id, device=device)
    mask = torch.zeros_like(ids)
    for r, c in enumerate(tails):
        ids[r, : len(c)] = torch.tensor(c, device=device)
        mask[r, : len(c)] = 1
    full_mask = torch.cat([enc["attention_mask"].repeat_interleave(width, 0), mask], dim=1)
    logits = model(input_ids=ids, attention_mask=full_mask, use_cache=False, **{_cache_arg(model): cache}).logits
    head = first_logp.repeat_interleave(width, 0).gather(-1, ids[:, :1]).squeeze(-1)
    rest = torch.log_softmax(logits[:, :-1, :].float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    logp = torch.cat([head.unsqueeze(1), rest], dim=1) * mask
    return logp.sum(1), mask.sum(1)


def calibrate(sums: np.ndarray, counts: np.ndarray, how: str, priors: np.ndarray | None = None) -> np.ndarray:
    """Turn summed answer log-probabilities into the score `evaluation.title_score` names: mean (per token), sum,
    or pmi (the sum minus the same answer's sum after a prompt without history, `priors`)."""
    if how == "mean":
        return sums / np.maximum(counts, 1)
    if how == "sum":
        return sums
    if how == "pmi":
        if priors is None:
            raise ConfigError("evaluation.title_score: pmi needs the title priors (the `title_priors` dataset)")
        return sums - priors
    raise ConfigError(f"evaluation.title_score must be one of {list(TITLE_SCORES)}, got {how!r}")


def score_titles(model, tokenizer, prompts: pd.DataFrame, batch_size: int = 16, desc: str = "scoring",
                 target: str = "title", pad_to_multiple_of: int | None = None,
                 answers: list[list[str]] | None = None, options_per_pass: int | None = 5,
                 title_score: str = "mean", priors: np.ndarray | None = None,
                 tails: AnswerTokens | None = None) -> np.ndarray:
    """Return each option's score [N, options] from the log-likelihood of its answer tokens after the prompt
    (`calibrate`: mean per token, the paper's 'highest probability' read literally; sum; or pmi against `priors`
    [N, options]). The prompt runs once; its KV cache is shared by the options.

    The answer tokens are those training produced (`AnswerTokens`), end-of-answer tokens included.
    `answers` (the same number per prompt) replaces the options' texts, e.g. for 50 retrieved titles.
    `options_per_pass` options of every prompt go through one answer pass (None: all of them): the prompt's KV
    cache is copied that many times, and the answer logits are that many rows, so memory stays bounded with 20
    or 50 options (benchmarks/scoring_memory.py, 2026-11-27, 2-core CPU: 20 options of 32 prompts, batch 16,
    SmolLM2-135M bf16 peaked at 9.81 GB all at once, 2.93 GB five at a time)."""
    answers = option_texts(prompts, target) if answers is None else answers
    if title_score == "pmi" and (priors is None or np.shape(priors) != (len(answers), len(answers[0]))):
        raise ConfigError(f"evaluation.title_score: pmi needs priors of shape {(len(answers), len(answers[0]))}")
    sums, counts = answer_likelihoods(model, tokenizer, prompts, batch_size, desc, pad_to_multiple_of, answers,
                                      options_per_pass, tails)
    return calibrate(sums, counts, title_score, None if priors is None else np.asarray(priors, dtype=float)).astype(np.float32)


def answer_likelihoods(model, tokenizer, prompts: pd.DataFrame, batch_size: int, desc: str,
                       pad_to_multiple_of: int | None, answers: list[list[str]],
                       options_per_pass: int | None, tails: AnswerTokens | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-probability of each answer's tokens after its prompt, and their number: two arrays [N, answers].

    Each prompt's answers go through the passes shortest first, so a pass pads its answers to similar lengths
    (padding is computed like real tokens); `tails` keeps the answers' tokens between calls (the service's)."""
    tails = AnswerTokens(tokenizer) if tails is None else tails
    instructions = prompts["instruction"].tolist()
    k = len(answers[0])
    group = k if not options_per_pass else max(1, min(int(options_per_pass), k))
    sums = np.zeros((len(prompts), k), dtype=np.float64)
    counts = np.zeros((len(prompts), k), dtype=np.float64)
    for idx, enc in _encoded_batches(model, tokenizer, prompts, batch_size, desc, pad_to_multiple_of):
        cache0, first_logp = prompt_pass(model, enc)
        tokens = {i: [tails(instructions[i], a) for a in answers[i]] for i in idx}
        order = {i: np.argsort([len(t) for t in tokens[i]], kind="stable") for i in idx}
        for lo in range(0, k, group):
            hi = min(k, lo + group)
            cache = cache0 if hi == k and lo == 0 else copy.deepcopy(cache0)
            conts = [tokens[i][j] for i in idx for j in order[i][lo:hi]]
            total, n = answer_pass(model, enc, cache, first_logp, conts, hi - lo, tokenizer.pad_token_id)
            del cache
            total = total.view(len(idx), hi - lo).double().cpu().numpy()
            n = n.view(len(idx), hi - lo).cpu().numpy()
            for r, i in enumerate(idx):
                sums[i, order[i][lo:hi]] = total[r]
                counts[i, order[i][lo:hi]] = n[r]
    return sums, counts


def title_priors(model, tokenizer, instruction: str, titles: list[str], batch_size: int = 16,
                 per_prompt: int = 16, desc: str = "title priors") -> np.ndarray:
    """Each title's summed answer log-probability after a prompt with no history: PMI's unconditional term."""
    from .models import history_input  # noqa: PLC0415

    if not titles:
        return np.zeros(0)
    chunks = [list(titles[i:i + per_prompt]) for i in range(0, len(titles), per_prompt)]
    chunks[-1] += [chunks[-1][-1]] * (per_prompt - len(chunks[-1]))  # every prompt the same number of answers
    prompts = pd.DataFrame({"instruction": instruction, "input": history_input([])}, index=range(len(chunks)))
    sums = score_titles(model, tokenizer, prompts, batch_size, desc=desc, answers=chunks, options_per_pass=None,
                        title_score="sum")
    return sums.reshape(-1)[: len(titles)].astype(float)


def generate_answers(model, tokenizer, prompts: pd.DataFrame, max_new_tokens: int, batch_size: int = 16,
                     desc: str = "generating") -> list[str]:
    """Greedy-generate each prompt's answer text (for the paper's exact-match metric)."""
    answers: list[str] = [""] * len(prompts)
    for idx, enc in _encoded_batches(model, tokenizer, prompts, batch_size, desc):
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(idx):
            answers[i] = tokenizer.decode(gen[row, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    return answers


def predictions_frame(method: str, prompts: pd.DataFrame, scores: np.ndarray, answers: list[str] | None = None,
                      extra: dict[str, Any] | None = None, expected: list[str] | None = None) -> pd.DataFrame:
    """One row per test prompt: scores per option, predicted letter, rank of the truth."""
    k = scores.shape[1]
    truth_idx = np.array([LETTERS.index(c) for c in prompts["correct_letter"]])
    pred_idx = scores.argmax(axis=1)
    truth_scores = scores[np.arange(len(scores)), truth_idx]
    rank = 1 + (scores > truth_scores[:, None]).sum(axis=1)
    df = pd.DataFrame(
        {
            "method": method,
            "reviewer_id": prompts["reviewer_id"].to_numpy(),
            "target_asin": prompts["target_asin"].to_numpy(),
            "correct_letter": prompts["correct_letter"].to_numpy(),
            "predicted_letter": [LETTERS[i] for i in pred_idx],
            "truth_rank": rank,
            "scores": [list(map(float, s)) for s in scores],
            "num_options": k,
        }
    )
    df["generated"] = answers if answers is not None else None
    df["expected_output"] = expected if expected is not None else prompts["output"].to_numpy()
    for key, value in (extra or {}).items():
        df[key] = value
    return df
