"""`halt_on_exact` (models/act.py, a recipe change): training rows halt as soon as their answer is exact, from the
first step; rows with a wrong answer, evaluation, and the default keep the paper's halting."""

from __future__ import annotations

from pathlib import Path

import torch

import pretrain
from models.act import answer_is_exact
from models.losses import IGNORE_LABEL_ID
from tests.conftest import CPU, D, tiny_config
from tests.test_curriculum import TINY_TRM_ARCH, trm


def test_answer_is_exact_counts_labelled_tokens_only() -> None:
    logits = torch.nn.functional.one_hot(torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3]]), 5).float()
    labels = torch.tensor([[1, 2, 3], [1, 2, 4], [1, IGNORE_LABEL_ID, 3], [IGNORE_LABEL_ID] * 3])
    assert answer_is_exact(logits, labels).tolist() == [True, False, True, False]


def test_training_rows_with_an_exact_answer_halt_at_once() -> None:
    model = trm("mlp_t_none", halt_exploration_prob=0.0, halt_max_steps=4)
    cfg = model.model.config
    n = cfg.batch_size
    batch = {
        "inputs": torch.randint(1, cfg.vocab_size, (n, cfg.seq_len)),
        "labels": torch.zeros(n, cfg.seq_len, dtype=torch.long),
        "puzzle_identifiers": torch.zeros(n, dtype=torch.int32),
    }
    with torch.no_grad():  # the first segment's answer (the same in training mode: no dropout, same state)
        logits = model(carry=model.initial_carry(batch), batch=batch, return_keys=["logits"])[3]["logits"]
    answer = logits.argmax(-1)
    right = torch.arange(n) % 2 == 0
    batch["labels"] = torch.where(right[:, None], answer, (answer + 1) % cfg.vocab_size)

    def halted(on: bool, training: bool) -> list[bool]:
        model.train(training)
        model.model.halt_when_exact = on
        with torch.no_grad():
            carry = model(carry=model.initial_carry(batch), batch=batch, return_keys=[])[0]
        return carry.halted.tolist()

    assert halted(on=True, training=True) == right.tolist()
    assert not any(halted(on=False, training=True))  # the paper's: the Q-head starts at "continue"
    assert not any(halted(on=True, training=False))  # evaluation runs every segment


def test_the_trainer_sets_it_from_the_config(tiny_sudoku: Path) -> None:
    for on in (False, True):
        config = tiny_config(tiny_sudoku, arch=TINY_TRM_ARCH, global_batch_size=16, halt_on_exact=on)
        _, meta = pretrain.create_dataloader(
            config, "train", D, CPU, test_set_mode=False, epochs_per_iter=1, global_batch_size=16
        )
        model, *_ = pretrain.create_model(config, meta, D, CPU, "float32", use_compile=False, log=lambda *_: None)
        assert model.eager.model.halt_when_exact is on
