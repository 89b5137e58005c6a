"""bench/bench.py: its TRM FLOP count (the MFU denominator in BENCHMARKS.md) against PyTorch's own count of one
real training step, and its command line on the CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import REPO, load_script, run_py

TINY = dict(hidden_size=64, num_heads=2, puzzle_emb_ndim=64, puzzle_emb_len=4, H_cycles=2, L_cycles=3)


@pytest.fixture(scope="module")
def bench():
    return load_script(REPO / "bench" / "bench.py")


@pytest.mark.parametrize("model", ["trm-mlp", "trm-attn"])
def test_trm_flop_count_matches_pytorchs_count_of_a_real_step(bench, model: str, monkeypatch) -> None:
    # One training step of the fork's TRM, driven the way bench.py drives it, counted by FlopCounterMode
    # (every matmul and attention kernel, forward and backward). The written count must agree: exactly for
    # mlp_t (matmuls only), within a few percent with attention, whose backward PyTorch counts as 2.5x (and whose
    # CPU inference kernel it does not count).
    monkeypatch.setattr(sys, "path", list(sys.path))
    seq, vocab, batch = 9, 11, 4
    arch = dict(bench.MODELS[model]) | TINY
    cfg = bench.config_dict(seq, vocab, batch, 1, arch)
    meta = bench.metadata_dict(seq, vocab, 1, groups=100)
    train, evaluate, _, _ = bench.setup_ours(REPO, cfg, meta, compile_=False)
    b = bench.make_batches(1, seq, vocab, batch, 1)[0]
    train(b, batch)  # the first step builds the carry; count a steady one
    with FlopCounterMode(display=False) as counter:
        train(b, batch)
    counted = counter.get_total_flops()
    written, per_puzzle = bench.trm_flops_per_step(seq, vocab, batch, arch)
    q_head = 3 * 2 * batch * arch["hidden_size"] * 2  # the Q head's tiny matmul, left out of the written count
    tolerance = 0.002 if model == "trm-mlp" else 0.06
    assert abs(written - (counted - q_head)) / counted < tolerance, (written, counted)
    with FlopCounterMode(display=False) as counter:  # evaluation: every puzzle runs all halt_max_steps segments
        evaluate([b])
    q_head = arch["halt_max_steps"] * 2 * batch * arch["hidden_size"] * 2
    assert abs(per_puzzle * batch - (counter.get_total_flops() - q_head)) / per_puzzle / batch < tolerance


@pytest.mark.slow
def test_cli_times_trm_on_cpu_and_prints_one_json_line(tmp_path: Path) -> None:
    args = ["bench/bench.py", "--model", "trm-mlp", "--no-compile", "--batch", "4", "--warmup", "1"]
    args += ["--steps", "1", "--eval-batches", "1", "--arch", "hidden_size=64", "num_heads=2", "puzzle_emb_ndim=64"]
    r = run_py(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(r.stdout.strip().splitlines()[-1])
    assert row["model"] == "trm-mlp" and row["impl"] == "ours" and row["steps_per_s"] > 0
    assert row["params"] > 0 and row["eval_puzzles_per_s"] > 0


def test_cli_refuses_a_peer_that_does_not_run_the_model(tmp_path: Path) -> None:
    r = run_py(["bench/bench.py", "--model", "trm-mlp", "--impl", "orig"], cwd=tmp_path)
    assert r.returncode == 2 and "pick a matching --model" in r.stderr
    assert torch.__version__  # the failure came from the argument check, before any model was built


def test_kernel_kinds_sort_the_names_a_profile_shows(bench) -> None:
    names = {
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64": "matmul (cuBLAS/CUTLASS)",
        "nvjet_hsh_192x128_64x4_1x2_h_bz_coopA_TNT": "matmul (cuBLAS/CUTLASS)",
        "triton_per_fused__to_copy_add_mean_mul_pow_rsqrt_3": "inductor fused (elementwise, norms, loss)",
        "_token_mix_kernel": "our Triton kernels",
        "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<...lerp...>": "optimizer and EMA (foreach)",
        "pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>": "attention",
        "Memcpy HtoD (Pinned -> Device)": "copies and fills",
        "triton_poi_fused_clone_transpose_4": "copies and fills",
        "ncclKernel_AllReduce": "other",
    }
    for name, kind in names.items():
        assert bench.kernel_kind(name) == kind, name
