"""The TRL internals that `training.answer_only_trainer` writes (`_metrics`, `_total_train_tokens`) exist in the
installed TRL. pyproject pins trl to the range where they do; a TRL release that renames them fails here, not in a
training run's logs."""

from __future__ import annotations

import inspect

import trl
from packaging.version import Version


def test_sft_trainer_still_has_the_private_fields_our_loss_writes():
    source = inspect.getsource(trl.SFTTrainer)
    assert 'self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}' in source
    assert "self._total_train_tokens = 0" in source
    # TRL's own loss logs them the same way: the token count as a one-element list, accuracy appended per step
    loss = inspect.getsource(trl.SFTTrainer.compute_loss)
    assert '["num_tokens"] = [self._total_train_tokens]' in loss and '["mean_token_accuracy"].append(' in loss


def test_trl_is_inside_the_pinned_range():
    assert Version("1.15") <= Version(trl.__version__) < Version("1.17"), trl.__version__
