"""The curricula (train/curriculum.py). Depth (`depth_curriculum=`): its format's checks, which step trains at which
depth, that a TRM run at a smaller depth is exactly the model built with that depth, that training steps run the
stage's depth while evaluation runs the arch's, and that the command line refuses it for HRM as one error line.
Segments (`segments_curriculum=`): rows of real training steps halt at the stage's limit, then the arch's; a
compiled model follows the limit; a command-line run says each stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pretrain
from models.losses import ACTLossHead
from tests.conftest import CPU, D, run_py, tiny_config
from tests.test_trm import FIX, TINY_TRM
from train import curriculum
from train.curriculum import DEPTH, SEGMENTS, Curriculum, Stage
from train.functions import load_model_class
from utils.errors import UserError

CGAR = [[0.3, 1, 2], [0.6, 2, 4]]


def test_parse_reads_stages_in_order() -> None:
    assert curriculum.parse(DEPTH, CGAR) == [Stage(0.3, (1, 2)), Stage(0.6, (2, 4))]
    assert curriculum.parse(DEPTH, []) == [] and curriculum.parse(DEPTH, None) == []
    assert curriculum.parse(DEPTH, [[0.5, 1.0, 3.0]]) == [Stage(0.5, (1, 3))]  # Hydra hands whole numbers as floats
    assert curriculum.parse(SEGMENTS, [[0.3, 4], [0.6, 8.0]]) == [Stage(0.3, (4,)), Stage(0.6, (8,))]


@pytest.mark.parametrize(
    "value, says",
    [
        ([[0.3, 1]], "each stage is [until, H_cycles, L_cycles]"),
        ([[0.0, 1, 2]], "between 0 and 1"),
        ([[1.0, 1, 2]], "between 0 and 1"),
        ([[0.6, 1, 2], [0.3, 2, 4]], "must increase"),
        ([[0.3, 1.5, 2]], "H_cycles=1.5 must be a whole number"),
        ([[0.3, 1, 0]], "L_cycles=0 must be a whole number >= 1"),
        (["0.3,1,2"], "each stage is"),
    ],
)
def test_parse_refuses_with_the_fix(value, says: str) -> None:
    with pytest.raises(UserError, match="depth_curriculum") as e:
        curriculum.parse(DEPTH, value)
    assert says in str(e.value)


@pytest.mark.parametrize(
    "value, says",
    [
        ([[0.3, 1, 2]], "each stage is [until, halt_max_steps], e.g. segments_curriculum=[[0.3,4],[0.6,8]]"),
        ([[1.5, 4]], "between 0 and 1"),
        ([[0.3, 0]], "halt_max_steps=0 must be a whole number >= 1"),
    ],
)
def test_segments_parse_refuses_with_the_fix(value, says: str) -> None:
    with pytest.raises(UserError, match="segments_curriculum") as e:
        curriculum.parse(SEGMENTS, value)
    assert says in str(e.value)


def test_each_step_trains_at_its_stage_depth() -> None:
    c = Curriculum(DEPTH, curriculum.parse(DEPTH, CGAR), total_steps=10, full=(3, 6), run_at=lambda *_: None)
    assert [c.values_of(s) for s in range(10)] == [(1, 2)] * 3 + [(2, 4)] * 3 + [(3, 6)] * 4
    assert [s for s in range(10) if c.starts_stage(s)] == [0, 3, 6]
    assert "H1xL2 for steps 0-2, H2xL4 for steps 3-5, then the arch's H3xL6 (evaluations always H3xL6" in c.describe()
    assert c.stage_line(3) == "depth H_cycles=2 L_cycles=4 from step 3 (curriculum stage 2 of 3)"


def trm(variant: str, **changes) -> ACTLossHead:
    """A TRM variant of the fixtures' config (seeded weights), with some keys changed."""
    ref = torch.load(FIX / f"model_{variant}.pt", weights_only=True)
    arch = ref["arch_config"]
    torch.manual_seed(0)
    model = load_model_class(arch["name"])(ref["model_config"] | {"forward_dtype": "float32"} | changes)
    return ACTLossHead(model, arch["loss"]["loss_type"]).eval()


@pytest.mark.parametrize("variant", ["mlp_t_none", "att_rope", "singlez", "hier6"])
def test_a_shallow_depth_is_the_model_built_at_that_depth(variant: str) -> None:
    deep, shallow = trm(variant, H_cycles=3, L_cycles=4), trm(variant, H_cycles=1, L_cycles=2)
    shallow.load_state_dict(deep.state_dict())
    cfg = deep.model.config
    batch = {
        "inputs": torch.randint(1, cfg.vocab_size, (4, cfg.seq_len)),
        "labels": torch.randint(1, cfg.vocab_size, (4, cfg.seq_len)),
        "puzzle_identifiers": torch.zeros(4, dtype=torch.int32),
    }

    def segment(model: ACTLossHead) -> tuple[torch.Tensor, torch.Tensor]:
        carry = model.initial_carry(batch)
        _, loss, _, out, _ = model(carry=carry, batch=batch, return_keys=["logits"])
        return loss, out["logits"]

    with deep.model.inner.at_depth(1, 2):
        ours = segment(deep)
    theirs = segment(shallow)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert (deep.model.inner.H_cycles, deep.model.inner.L_cycles) == (3, 4)  # the config's depth again
    assert not torch.equal(segment(deep)[1], theirs[1])  # and it is a different model there


def test_the_model_must_be_able_to_run_each_stage() -> None:
    with pytest.raises(UserError, match="trm_hier6 has 6 latent states"):
        curriculum.check_model(DEPTH, [Stage(0.5, (1, 7))], type(trm("hier6").model), "hier6")
    hrm = load_model_class("hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1")
    with pytest.raises(UserError, match="depth_curriculum is for TRM"):
        curriculum.check_model(DEPTH, [Stage(0.5, (1, 1))], hrm, "hrm_v1")
    curriculum.check_model(SEGMENTS, [Stage(0.5, (1,))], hrm, "hrm_v1", 16)  # every ACT model runs fewer segments
    with pytest.raises(UserError, match=r"stage M32: 32 segments is more than the arch's arch.halt_max_steps=16"):
        curriculum.check_model(SEGMENTS, [Stage(0.2, (8,)), Stage(0.5, (32,))], hrm, "hrm_v1", 16)


def test_training_steps_run_the_stage_depth_and_evaluation_the_arch_depth(tiny_sudoku: Path) -> None:
    """Counted calls of f (L_level) in a real training step of each stage and in an evaluation batch."""
    arch = {
        "name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
        "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
        **dict(hidden_size=32, num_heads=2, L_layers=1, H_cycles=2, L_cycles=3, halt_max_steps=2),
        **dict(expansion=4, pos_encodings="rope", halt_exploration_prob=0.0, puzzle_emb_ndim=32, puzzle_emb_len=1),
    }
    config = tiny_config(tiny_sudoku, arch=arch, global_batch_size=16, depth_curriculum=[[0.5, 1, 1]])
    loader, meta = pretrain.create_dataloader(
        config, "train", D, CPU, test_set_mode=False, epochs_per_iter=1, global_batch_size=16
    )
    model, opts, lrs = pretrain.create_model(config, meta, D, CPU, "float32", use_compile=False, log=lambda *_: None)
    curricula = curriculum.build(config, model.eager.model, total_steps=4)
    state = pretrain.TrainState(model, opts, lrs, carry=None, step=0, total_steps=4, curricula=curricula)
    calls = []
    model.eager.model.inner.L_level.register_forward_hook(lambda *_: calls.append(1))
    per_step = []
    for _step, (_set, batch, gbs) in zip(range(4), loader):
        calls.clear()
        pretrain.train_batch(config, state, batch, gbs, D, CPU)
        per_step.append(len(calls))
    assert per_step == [1 * (1 + 1)] * 2 + [2 * (3 + 1)] * 2  # T (n + 1) calls a segment
    calls.clear()
    with torch.inference_mode():
        carry = model.eager.initial_carry(batch)
        model.eager(carry=carry, batch=batch, return_keys=[])
    assert len(calls) == 2 * (3 + 1)


@pytest.mark.slow
def test_pretrain_refuses_it_for_hrm_and_a_bad_format_as_one_line(tiny_sudoku: Path, tmp_path: Path) -> None:
    args = [f"data_path={tiny_sudoku}", f"checkpoint_path={tmp_path / 'run'}", "device=cpu", "epochs=1"]
    args += ["eval_interval=1"]
    args += ["arch.hidden_size=32", "arch.num_heads=2", "global_batch_size=16"]
    r = run_py(["pretrain.py", *args, "depth_curriculum=[[0.5,1,1]]"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "error: depth_curriculum is for TRM" in r.stderr
    r = run_py(["pretrain.py", *args, *TINY_TRM, "depth_curriculum=[[0.5,1]]"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "each stage is [until, H_cycles, L_cycles]" in r.stderr
    assert not (tmp_path / "run").exists()  # refused before a run folder was made


def test_a_compiled_model_follows_the_depth() -> None:
    """torch.compile guards on the depth ints, so a new depth is a new graph, never the last depth's graph run again
    (Dynamo alone, backend="eager": the guards are Dynamo's, Inductor adds nothing to them)."""
    torch._dynamo.reset()
    model = trm("mlp_t_none", H_cycles=2, L_cycles=3)
    compiled = torch.compile(model, backend="eager", dynamic=False)
    cfg = model.model.config
    batch = {
        "inputs": torch.randint(1, cfg.vocab_size, (4, cfg.seq_len)),
        "labels": torch.randint(1, cfg.vocab_size, (4, cfg.seq_len)),
        "puzzle_identifiers": torch.zeros(4, dtype=torch.int32),
    }

    def logits(m) -> torch.Tensor:
        return m(carry=model.initial_carry(batch), batch=batch, return_keys=["logits"])[3]["logits"]

    with torch.no_grad():
        for depth_ in [(1, 1), (2, 3), (1, 2)]:
            with model.model.inner.at_depth(*depth_):
                torch.testing.assert_close(logits(compiled), logits(model), rtol=0, atol=0)
        full = logits(compiled)
        with model.model.inner.at_depth(1, 1):
            assert not torch.equal(logits(compiled), full)


TINY_HRM_ARCH = {
    "name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
    "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
    **dict(hidden_size=32, num_heads=2, H_layers=1, L_layers=1, H_cycles=1, L_cycles=1, halt_max_steps=4),
    **dict(expansion=4, pos_encodings="rope", halt_exploration_prob=0.0, puzzle_emb_ndim=32),
}
TINY_TRM_ARCH = {
    "name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
    **dict(hidden_size=32, num_heads=2, L_layers=1, H_cycles=1, L_cycles=1, halt_max_steps=4),
    **dict(expansion=4, pos_encodings="rope", halt_exploration_prob=0.0, puzzle_emb_ndim=32, puzzle_emb_len=1),
}


@pytest.mark.parametrize("arch", [TINY_HRM_ARCH, TINY_TRM_ARCH], ids=["hrm", "trm"])
def test_training_rows_halt_at_the_stage_limit_then_the_arch_limit(tiny_sudoku: Path, arch: dict) -> None:
    """Real training steps (no exploration; the Q-head starts at "continue", so only the limit halts a row): the
    segment count of the batch's rows after each step, and that the model's limit is the arch's outside a step."""
    # a learning rate near 0 keeps the Q-head at "continue" (at 0.5, HRM's learns to halt within a few steps)
    config = tiny_config(tiny_sudoku, arch=arch, global_batch_size=16, segments_curriculum=[[0.5, 2]], lr=1e-8)
    loader, meta = pretrain.create_dataloader(
        config, "train", D, CPU, test_set_mode=False, epochs_per_iter=8, global_batch_size=16
    )
    model, opts, lrs = pretrain.create_model(config, meta, D, CPU, "float32", use_compile=False, log=lambda *_: None)
    curricula = curriculum.build(config, model.eager.model, total_steps=8)
    assert [c.describe() for c in curricula] == [
        "M2 for steps 0-3, then the arch's M4 (evaluations always M4; train/curriculum.py)"
    ]
    state = pretrain.TrainState(model, opts, lrs, carry=None, step=0, total_steps=8, curricula=curricula)
    counts, halted = [], []
    for _step, (_set, batch, gbs) in zip(range(8), loader):
        pretrain.train_batch(config, state, batch, gbs, D, CPU)
        (carry,) = state.carry
        counts.append(sorted(set(carry.steps.tolist())))
        halted.append(bool(carry.halted.all()))
    # stage 1 (steps 0-3): 2 segments a puzzle; from step 4 the arch's 4, starting from fresh rows
    assert counts == [[1], [2], [1], [2], [1], [2], [3], [4]]
    assert halted == [False, True, False, True, False, False, False, True]
    assert model.eager.model.max_segments == 4


def test_a_compiled_model_follows_the_segment_limit() -> None:
    """torch.compile guards on the limit: a row halts at the limit in force, never at a graph's stale one."""
    torch._dynamo.reset()
    model = trm("mlp_t_none", halt_exploration_prob=0.0, halt_max_steps=3).train()
    compiled = torch.compile(model, backend="eager", dynamic=False)
    cfg = model.model.config
    n = cfg.batch_size  # training mode: the sparse embedding's row buffer has the config's batch size
    batch = {
        "inputs": torch.randint(1, cfg.vocab_size, (n, cfg.seq_len)),
        "labels": torch.randint(1, cfg.vocab_size, (n, cfg.seq_len)),
        "puzzle_identifiers": torch.zeros(n, dtype=torch.int32),
    }

    def halted_after_one(m) -> bool:
        return bool(m(carry=model.initial_carry(batch), batch=batch, return_keys=[])[0].halted.all())

    with torch.no_grad():
        assert not halted_after_one(compiled)
        with model.model.at_halt_max_steps(1):
            assert halted_after_one(compiled)
        assert not halted_after_one(compiled)
    with pytest.raises(ValueError, match="halt_max_steps must be >= 1"):
        with model.model.at_halt_max_steps(0):
            pass


@pytest.mark.slow
def test_pretrain_says_each_segments_stage_and_refuses_a_bad_one(tiny_sudoku: Path, tmp_path: Path) -> None:
    args = [f"data_path={tiny_sudoku}", "device=cpu", "epochs=4", "eval_interval=4", "global_batch_size=16"]
    args += ["arch.hidden_size=32", "arch.num_heads=2", "arch.H_layers=1", "arch.L_layers=1", "arch.halt_max_steps=4"]
    r = run_py(["pretrain.py", *args, f"checkpoint_path={tmp_path / 'run'}", "segments_curriculum=[[0.5,2]]"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "segments halt_max_steps=2 from step 0 (curriculum stage 1 of 2)" in r.stdout
    assert "segments halt_max_steps=4 from step " in r.stdout and "(curriculum stage 2 of 2)" in r.stdout
    r = run_py(["pretrain.py", *args, f"checkpoint_path={tmp_path / 'bad'}", "segments_curriculum=[[0.5,2,3]]"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "error: segments_curriculum[0]=[0.5, 2, 3]: each stage is [until, halt_max_steps]" in r.stderr
    assert not (tmp_path / "bad").exists()


def test_whole_model_compile_gets_room_for_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both curricula with their own boundaries: 6 settings of the step, each a graph under whole-model compile."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    noop = lambda *_: None  # noqa: E731
    depth_ = Curriculum(DEPTH, curriculum.parse(DEPTH, CGAR), 100, (3, 6), run_at=noop)
    segments = Curriculum(SEGMENTS, curriculum.parse(SEGMENTS, [[0.2, 4], [0.5, 8]]), 100, (16,), run_at=noop)
    assert curriculum.settings([depth_]) == 3 and curriculum.settings([depth_, segments]) == 5
    said: list[str] = []
    curriculum.make_room_for_recompiles([depth_], said.append)
    assert torch._dynamo.config.recompile_limit == 8 and said == []  # 3 settings + evaluation fit
    curriculum.make_room_for_recompiles([depth_, segments], said.append)
    assert torch._dynamo.config.recompile_limit == 9
    assert said == ["torch.compile: recompile limit raised to 9 for the curricula's 5 settings of the step"]
