"""A training run, as `run()` drives it: its plan (loaders and schedule), the freshly built train state and the
resume into it, the start-up (run folder, report) and the loop (`Loop`: its state between steps, each finished
step, each pass, each eval, the stop).

The work of each step is the original's functions in train/steps.py (train_batch, evaluate, save_train_state...),
called by their names here.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from dataset.format import PuzzleDatasetMetadata
from dataset.loader import PuzzleDataset, has_split
from dataset.transforms import puzzle_kind
from train import checkpoint as ckpt
from train import curriculum, run_checkpoint
from train.config import PretrainConfig, eval_batch
from train.records import TimeToAccuracy
from train.report import band_row, evaluate_command, finished_message, plan_line, print_report, run_rows
from train.run_folder import Resumed, healthy_hint, resume_command
from train.runtime import Dist, Runtime
from train.signals import StopSignals
from train.steps import (
    StepResult,
    TrainState,
    create_dataloader,
    eval_headline,
    evaluate,
    finish_step,
    init_train_state,
    restore_train_state,
    save_code_and_config,
    save_train_state,
    train_batch,
)
from train.tracking import Estimate, StepRate, Tracker, fmt_seconds, progress_bar
from train.tta import check_tta_kind, check_tta_memory, evaluate_tta, prefix_sizes
from train.writes import WriteGuard
from utils import shell
from utils.errors import UserError, out_of_memory_explained

# ----------------------------------------------------------------------------------------------------------
# Set-up: data and plan, start-up report


@dataclass
class Plan:
    """The run's data and schedule: the loaders, and how many passes and steps the loop trains."""

    train: DataLoader
    test: DataLoader
    train_meta: PuzzleDatasetMetadata
    test_meta: PuzzleDatasetMetadata
    val: DataLoader | None  # the data folder's val/ (builders write one): the best step is chosen on it
    val_meta: PuzzleDatasetMetadata | None
    epochs_per_iter: int  # epochs per pass over the training data; an eval follows each pass
    total_iters: int  # passes
    total_steps: int  # the original's formula: the length of the lr schedule
    steps_per_pass: int
    planned: int  # the steps the loop trains (the last checkpoint is step_<planned>)
    exact: bool  # `planned` is exact (one example per puzzle), else approximate


def create_plan(config: PretrainConfig, d: Dist, device: torch.device) -> Plan:
    epochs_per_iter = config.eval_interval if config.eval_interval is not None else config.epochs
    total_iters = config.epochs // epochs_per_iter
    train_loader, train_meta = create_dataloader(
        config,
        "train",
        d,
        device,
        test_set_mode=False,
        epochs_per_iter=epochs_per_iter,
        global_batch_size=config.global_batch_size,
    )
    eval_loader, eval_meta = create_dataloader(
        config, "test", d, device, test_set_mode=True, epochs_per_iter=1, global_batch_size=eval_batch(config)
    )
    val_loader, val_meta = None, None
    if has_split(config.data_path, "val"):
        val_loader, val_meta = create_dataloader(
            config, "val", d, device, test_set_mode=True, epochs_per_iter=1, global_batch_size=eval_batch(config)
        )
    for loader in (eval_loader, val_loader):  # on every rank, now: guess counts of another build stop them all here
        if loader is not None:
            cast(PuzzleDataset, loader.dataset).hard_band()
    if config.eval_tta > 1:  # it needs the test set's kind: refused now, not at the run's last eval
        score = ["python", "dataset/score_arc.py", "--preds", str(config.checkpoint_path), "--data", config.data_path]
        kind = puzzle_kind(eval_meta.seq_len, eval_meta.vocab_size, eval_meta.num_puzzle_identifiers)
        check_tta_kind(
            kind, config.eval_tta, "eval_tta", f"once evaluate.py wrote a checkpoint's predictions, {shell.join(score)}"
        )
        test_examples = sum(cast(PuzzleDataset, eval_loader.dataset).set_sizes().values())
        if config.eval_batches is not None:  # the vote takes the rows the plain evaluation scores
            test_examples = min(test_examples, config.eval_batches * eval_batch(config))
        check_tta_memory(test_examples, config.eval_tta, eval_meta.seq_len, "eval_tta")
    total_steps = int(
        config.epochs * train_meta.total_groups * train_meta.mean_puzzle_examples / config.global_batch_size
    )
    steps_per_pass = int(
        epochs_per_iter * train_meta.total_groups * train_meta.mean_puzzle_examples // config.global_batch_size
    )
    if total_steps <= 0 or steps_per_pass <= 0:
        raise UserError(
            f"global_batch_size={config.global_batch_size} is larger than one pass of training data "
            f"({train_meta.total_groups} groups x {epochs_per_iter} epochs): lower global_batch_size or raise eval_interval/epochs"
        )
    # total_steps (the original's formula) sets the lr schedule; the loop trains whole batches of each pass,
    # so it ends at total_iters * steps_per_pass when that is fewer (each pass drops its partial last batch).
    # With one example per puzzle (Sudoku, Maze) a pass is exactly steps_per_pass batches; with several
    # (ARC) a pass's count varies a little with the puzzles drawn, so the plan is approximate.
    planned = min(total_steps, total_iters * steps_per_pass)
    exact = train_meta.mean_puzzle_examples == 1
    loaders = (train_loader, eval_loader, train_meta, eval_meta, val_loader, val_meta)
    return Plan(*loaders, epochs_per_iter, total_iters, total_steps, steps_per_pass, planned, exact)


def start_run(
    config: PretrainConfig,
    rt: Runtime,
    state: TrainState,
    plan: Plan,
    tracker: Tracker,
    writes: WriteGuard,
    metrics_bytes: int | None,
) -> None:
    """Rank 0, before the first step: the run folder cleaned and its files begun (metrics.jsonl rewound on
    resume, W&B, all_config.yaml), then the start-up report (train/report.py)."""
    run_checkpoint.clean_stale(str(config.checkpoint_path), print)
    if config.resume is not None:  # steps after the checkpoint will be trained (and logged) again
        writes.call("metrics.jsonl", tracker.rewind, state.step, metrics_bytes)
    model = state.model.eager
    n_params = sum(p.numel() for p in model.parameters())
    wandb_status = tracker.start_wandb(
        config.wandb_mode, config.project_name or "", config.run_name or "", config.model_dump()
    )
    writes.call("all_config.yaml or the model code copy", save_code_and_config, config)
    print(f"training {'TRM' if 'recursive_reasoning' in config.arch.name else 'HRM'}: {config.run_name}")
    test_examples = sum(cast(PuzzleDataset, plan.test.dataset).set_sizes().values())
    emb_params = sum(b.numel() for n, b in model.named_buffers() if n.endswith("puzzle_emb.weights"))
    schedule = plan_line(config, plan.planned, plan.total_steps, plan.exact, plan.steps_per_pass, plan.total_iters)
    rows = run_rows(
        config,
        rt.device,
        plan.train_meta,
        test_examples,
        n_params,
        emb_params,
        schedule,
        plan.total_iters,
        state.head.halt_max_steps,
        state.step,
        wandb_status,
    )
    rows += [(c.kind.what, c.describe()) for c in state.curricula]
    held_out = [plan.test] + ([plan.val] if plan.val is not None else [])
    rows.append(band_row([cast(PuzzleDataset, loader.dataset) for loader in held_out]))
    print_report(rt.report + rows)
    if state.step == 0:
        tracker.log({"num_params": n_params}, step=0)


# ----------------------------------------------------------------------------------------------------------
# The loop


class Loop:
    """The training loop's state between steps (progress, step rate, estimate, timing, phase, stop reason...)
    and what it does with each finished step, each pass, each eval and the stop; train/steps.py's functions do the work."""

    def __init__(
        self,
        config: PretrainConfig,
        rt: Runtime,
        state: TrainState,
        plan: Plan,
        prog: run_checkpoint.Progress,
        tracker: Tracker,
        writes: WriteGuard,
        log: Callable[..., None],
    ) -> None:
        self.config, self.d, self.device, self.log = config, rt.d, rt.device, log
        self.state, self.plan, self.prog, self.tracker, self.writes = state, plan, prog, tracker, writes
        self.resumed_at = state.step if config.resume is not None else None
        self.rate = StepRate(warmup_steps=state.model.warmup_calls)
        steps_left_at = curriculum.steps_left_counter(state.curricula)  # None: every step costs the same
        self.bar = (
            progress_bar(
                plan.planned, state.step, config.global_batch_size, rate=self.rate, steps_left_at=steps_left_at
            )
            if rt.d.is_main
            else None
        )
        self.shown_acc = 0.0  # the last train accuracy measured (steps where no row halted measure none)
        left = plan.total_iters - prog.passes_done
        self.estimate = Estimate(
            state.step,
            plan.planned,
            left,
            log,
            self.rate,
            compiled=rt.use_compile,
            steps_left_at=steps_left_at,
        )
        self.timing = TimeToAccuracy.resumed(prog.timing)
        self.phase = "train"
        self.last_save = time.monotonic()
        self.stop_reason = ""  # set: the run stops (a signal, non-finite values, early stopping)
        self.eval_finite = True  # the last eval's metrics were all finite
        if config.eval_tta > 1 and rt.d.world_size > 1:
            log(
                f"note: eval_tta={config.eval_tta} is skipped with {rt.d.world_size} processes (it runs in one, "
                "which could outlast the others' wait); after training: "
                f"{evaluate_command(str(config.checkpoint_path), plan.planned)} tta={config.eval_tta}"
            )
        # Exists before anything reads it (`handle`, the loop); its handlers are installed by `with loop.signals:`.
        self.signals = StopSignals(log, self.stop_plan)

    def stop_plan(self) -> str:
        """What a stop signal does now, for the line printed the moment it arrives."""
        if self.phase == "eval":
            return "finishing the evaluation, then saving a checkpoint and exiting"
        sps = self.rate.seconds_per_step() or self.rate.first
        # one process stops after the step it is in; several agree on the stop through the next step's
        # all-reduced flags, so they finish one more
        steps = 1 if self.d.world_size == 1 else 2
        what = "this step" if steps == 1 else "this step and the next (all processes stop at the same step)"
        took = f" (at most ~{fmt_seconds(steps * sps)}: a step takes {fmt_seconds(sps)})" if sps else ""
        return f"finishing {what}{took}, then saving a checkpoint and exiting"

    def out_of_memory(self, evaluating: bool = False) -> AbstractContextManager[None]:
        """Out of memory inside: one line naming the setting to lower (utils/errors.py)."""
        local = self.config.global_batch_size // self.d.world_size
        batch = eval_batch(self.config) if evaluating else None
        return out_of_memory_explained(self.device, local, self.config.micro_batch_size or local, batch)

    def handle(self, r: StepResult) -> bool:
        """Bookkeeping of one finished step (steps finish one behind the launches). True: a save is asked for."""
        config, prog, d, metrics = self.config, self.prog, self.d, r.metrics
        if prog.pending_check is not None and r.step == prog.pending_check + 1:
            # the first loss computed with that checkpoint's weights: its verdict
            if not r.nonfinite:
                prog.healthy_step = prog.pending_check
            elif d.is_main:
                why = f"step {r.step}, the first with its weights, had a non-finite loss"
                self.writes.call(
                    "a checkpoint's health marker", ckpt.mark_unhealthy, config.checkpoint_path, prog.pending_check, why
                )
            prog.pending_check = None
        if r.nonfinite:
            prog.nan_streak += 1
            self.log(f"step {r.step}: non-finite loss or gradient; step skipped ({prog.nan_streak} in a row)")
            if config.nan_policy == "stop" or prog.nan_streak >= config.max_nan_skips:
                self.stop_reason = (
                    f"non-finite loss or gradients ({prog.nan_streak} step(s) in a row, nan_policy={config.nan_policy})"
                )
        else:
            prog.nan_streak = 0
        if config.early_stop_exact_accuracy is not None and metrics["train/count"] > 0:
            above = metrics["train/exact_accuracy"] >= config.early_stop_exact_accuracy
            prog.early_stop_streak = prog.early_stop_streak + 1 if above else 0
            if prog.early_stop_streak >= config.early_stop_patience and not self.stop_reason:
                self.stop_reason = (
                    f"train exact accuracy >= {config.early_stop_exact_accuracy} for {config.early_stop_patience} steps"
                )
        if self.bar is not None:  # rank 0
            self.tracker.log(metrics | {"train/skipped": float(r.nonfinite)}, step=r.step)
            self.bar.update(r.step - self.bar.n)
            if metrics["train/count"] > 0:  # accuracy only means something on steps where rows halted
                self.shown_acc = metrics["train/accuracy"]
            self.bar.set_postfix(loss=f"{metrics['train/lm_loss']:.3f}", acc=f"{self.shown_acc:.3f}", refresh=False)
        if r.stop and not self.stop_reason:
            self.stop_reason = f"{self.signals.requested or 'a signal'} received"
        return r.stop or r.save

    def settle(self, results: list[StepResult | None], save: bool = False) -> bool:
        """Handle finished steps; checkpoint the last launched step when asked. True: stop training."""
        while True:
            for r in results:
                if r is not None:
                    save |= self.handle(r)
            if self.stop_reason.startswith("non-finite"):
                return True  # never checkpoint weights that just saw NaNs: the last checkpoint stays the one to resume
            if not (save or self.stop_reason) or self.state.pending is None:
                break
            results = [finish_step(self.state)]  # a checkpoint holds every launched step, read and counted
        if save or self.stop_reason:
            why = self.stop_reason or "interval"
            if save_train_state(self.config, self.state, self.prog, self.d, why, None, self.tracker, self.writes):
                if self.d.is_main:
                    self.last_save = time.monotonic()
            self.rate.pause()  # the write is not a training step
        return bool(self.stop_reason)

    def where(self, it: int) -> str:
        """The pass's heading: its first epoch, and where a resumed run picks up."""
        prog, per, plan = self.prog, self.plan.epochs_per_iter, self.plan
        where = f"Epoch {it * per}"
        if self.resumed_at is not None and it == prog.passes_done and prog.batches_into_pass:
            into = prog.batches_into_pass * per // plan.steps_per_pass
            where = (
                f"Epoch {it * per + into} (resumed at step {self.resumed_at:,} of {plan.planned:,}: "
                f"{prog.batches_into_pass} of {plan.steps_per_pass} batches done in the pass from epoch {it * per})"
            )
        elif self.resumed_at is not None and it == prog.passes_done:
            where += f" (resumed at step {self.resumed_at:,} of {plan.planned:,})"
        return where

    def train_pass(self, it: int) -> bool:
        """Train pass `it` over the data (a resumed run: its rest). True: the run stops."""
        config, state, d = self.config, self.state, self.d
        if d.is_main:
            print(f"[Rank {d.rank}, World Size {d.world_size}]: {self.where(it)}", flush=True)
        state.model.eager.train()
        for _set, batch, gbs in self.plan.train:
            if state.step >= state.total_steps:
                break
            if self.signals.requested and d.world_size == 1 and not self.stop_reason:
                # One process needs no agreement: stop after the step the signal arrived in, read and saved.
                self.stop_reason = f"{self.signals.requested} received"
                if self.settle([]):
                    break
            timed = (
                d.is_main
                and config.checkpoint_minutes is not None
                and time.monotonic() - self.last_save > 60 * config.checkpoint_minutes
            )
            for c in state.curricula if d.is_main else []:  # each stage's first step, and where a resumed run goes on
                if c.starts_stage(state.step) or state.step == self.resumed_at:
                    print(c.stage_line(state.step), flush=True)
            with self.out_of_memory():
                res = train_batch(config, state, batch, gbs, d, self.device, self.signals.requested is not None, timed)
            self.prog.batches_into_pass += 1
            if d.is_main:
                self.rate.tick(state.step)
                self.estimate.tick(state.step)
            interval_due = config.checkpoint_interval is not None and state.step % config.checkpoint_interval == 0
            if self.settle([res], save=interval_due):
                break
        if not self.stop_reason:
            self.settle([finish_step(state)])  # the pass's last step
        return bool(self.stop_reason)

    def eval_pass(self, it: int) -> bool:
        """Evaluate after pass `it`, log it and checkpoint it. True: a stop signal came meanwhile."""
        config, state, d, prog = self.config, self.state, self.d, self.prog
        state.model.eager.eval()
        self.phase = "eval"
        test, meta = self.plan.test, self.plan.test_meta
        val = None
        with self.out_of_memory(evaluating=True):
            with state.ema.swapped_in() if state.ema is not None else nullcontext():
                results = evaluate(config, state, test, meta, d, self.device, self.writes)
                if self.plan.val is not None and self.plan.val_meta is not None:  # the same weights, no outputs saved
                    quiet = config.model_copy(update={"eval_save_outputs": []})
                    val = evaluate(quiet, state, self.plan.val, self.plan.val_meta, d, self.device, self.writes)
            raw = None
            if state.ema is not None and config.ema_eval_raw:  # the live weights too, for comparison
                quiet = config.model_copy(update={"eval_save_outputs": []})
                raw = evaluate(quiet, state, test, meta, d, self.device, self.writes)
        self.eval_finite = all(
            math.isfinite(v) for r in (results, raw, val) if r is not None for m in r.values() for v in m.values()
        )
        prog.passes_done, prog.batches_into_pass = it + 1, 0
        if d.is_main and results is not None:
            self.report_eval(results, raw, val)
        if d.world_size > 1:  # every rank needs rank 0's best_step for pruning decisions to agree
            obj = [(prog.best_step, prog.best_value, self.eval_finite)]
            dist.broadcast_object_list(obj, src=0)
            prog.best_step, prog.best_value, self.eval_finite = obj[0]
        if config.checkpoint_every_eval or it == self.plan.total_iters - 1:
            prog.eval_steps.append(state.step)
        path = save_train_state(config, state, prog, d, "eval", self.eval_finite, self.tracker, self.writes)
        if path:
            self.last_save = time.monotonic()
            self.log(f"checkpoint: {shell.quote(path)}")
        if config.eval_tta > 1 and (config.eval_tta_every or it == self.plan.total_iters - 1):
            # Optional, so after the checkpoint: a vote that fails (out of memory, a signal) loses nothing saved
            with self.out_of_memory(evaluating=True):
                with state.ema.swapped_in() if state.ema is not None else nullcontext():
                    tta = self.tta()  # the weights of the headline score
            if d.is_main and tta is not None:
                self.report_tta(*tta)
        self.phase = "train"
        self.rate.pause()  # the evaluation (and its compile) is not training time
        if self.signals.requested:
            self.stop_reason = f"{self.signals.requested} received"
            return True
        return False

    def tta(self) -> tuple[dict[str, dict[str, float]], float] | None:
        """Test-time augmentation with the model as it is now (train/tta.py): its scores per set and seconds; one
        process only (see __init__'s note), so None with several."""
        config, state = self.config, self.state
        if self.d.world_size > 1:
            return None
        k, batch = config.eval_tta, eval_batch(config)
        rows = config.eval_batches * batch if config.eval_batches is not None else None  # the same rows as the eval
        print(f"  TTA: solving {k} transformed copies of each test puzzle ({k} plain evaluations)...", flush=True)
        t0 = time.monotonic()
        scores = evaluate_tta(
            state.model, state.model.eager, config.data_path, self.plan.test_meta, k, batch,
            state.head.halt_max_steps, self.device, rows=rows,
        )  # fmt: skip
        return scores, time.monotonic() - t0

    def report_tta(self, scores: dict[str, dict[str, float]], took: float) -> None:
        """Rank 0: log and print the vote of the eval just saved, as a row of its own at the same step (after the
        eval's: the eval's time and time to accuracy are the headline's, known before the vote; the clock runs on,
        so later evals' times include the vote: a record pays for what it runs)."""
        flat: dict[str, float] = {}
        for s, m in scores.items():
            flat |= {
                f"{s}/{k}": m[k] for k in ("tta_exact_accuracy", "tta_accuracy", "hard_tta_exact_accuracy") if k in m
            }
            flat |= {f"{s}/tta/{k}": v for k, v in m.items() if k.startswith("k")}
        flat["elapsed_s"] = self.timing.elapsed()
        self.tracker.log(flat, step=self.state.step)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in flat.items() if "/tta/" not in k and k != "elapsed_s")
        print("eval " + shown, flush=True)
        for s, m in scores.items():
            print(f"  {'EMA ' if self.state.ema is not None else ''}{tta_line(s, m, self.config.eval_tta, took)}")

    def report_eval(
        self,
        results: dict[str, dict[str, float]],
        raw: dict[str, dict[str, float]] | None,
        val: dict[str, dict[str, float]] | None = None,
    ) -> None:
        """Rank 0: log and print an eval's metrics, keep the best step, and the time to accuracy. With a val/
        split, the best step and the times are chosen on val's exact accuracy and report test's at that step:
        a figure chosen on the set it reports would flatter it."""
        prog, step = self.prog, self.state.step
        flat = {f"{s}/{k}": v for s, m in results.items() for k, v in m.items()}
        flat |= {f"raw/{s}/{k}": v for s, m in (raw or {}).items() for k, v in m.items()}
        flat |= {f"val/{s}/{k}": v for s, m in (val or {}).items() for k, v in m.items()}
        known_at = self.timing.elapsed()
        flat["elapsed_s"] = known_at  # since the command's start, earlier jobs of a resumed run included
        self.tracker.log(flat, step=step)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in flat.items() if "/step_" not in k and "/tta/" not in k)
        print("eval " + shown, flush=True)
        halt_max_steps = self.state.head.halt_max_steps
        for s, m in {**results, **{f"raw/{s}": m for s, m in (raw or {}).items()}}.items():
            if "step_1/exact_accuracy" in m:  # eval_per_step: one compact line instead of 4 keys per segment
                cells = " ".join(f"{m[f'step_{i}/exact_accuracy']:.3f}" for i in range(1, halt_max_steps + 1))
                print(f"  {s} exact accuracy after segment 1..{halt_max_steps}: {cells}", flush=True)
        for line in eval_headline(results, halt_max_steps):
            print(f"  {'EMA ' if self.state.ema is not None else ''}{line}", flush=True)
        for line in eval_headline(raw or {}, halt_max_steps):
            print(f"  raw {line}", flush=True)
        for line in eval_headline(val or {}, halt_max_steps):
            print(f"  val {line}", flush=True)
        exact = [m["exact_accuracy"] for m in results.values() if "exact_accuracy" in m]
        val_exact = [m["exact_accuracy"] for m in (val or {}).values() if "exact_accuracy" in m]
        chosen = val_exact or exact  # what the best step and the times are chosen on
        if chosen and (prog.best_value is None or sum(chosen) / len(chosen) > prog.best_value):
            prog.best_step, prog.best_value = step, sum(chosen) / len(chosen)
        if chosen:
            test = sum(exact) / len(exact) if val_exact and exact else None
            for line in self.timing.update(sum(chosen) / len(chosen), step, at=known_at, test=test):
                print(f"  {line}", flush=True)
            prog.timing = self.timing.state_dict()

    def finish(self) -> None:
        """The run's last lines; a stop by signal exits 130, non-finite values at the end exit 2."""
        config, prog, step, log, stop_reason = self.config, self.prog, self.state.step, self.log, self.stop_reason
        if self.bar is not None:
            self.bar.close()
        self.tracker.finish()
        if self.timing.best is not None:
            log(self.timing.summary())
        if not stop_reason and prog.passes_done >= self.plan.total_iters:
            log(finished_message(config, prog, step, already=False))
        if stop_reason:
            log(f"stopped at step {step}: {stop_reason}")
            if stop_reason.startswith("non-finite"):
                raise UserError(f"training stopped on non-finite values; {healthy_hint(config, prog.healthy_step)}")
            done = ckpt.list_complete(config.checkpoint_path or "")
            if done:
                log(f"last complete checkpoint: step_{done[0]}. To continue:\n  {resume_command(config)}")
            if "received" in stop_reason:
                sys.exit(130)
        elif prog.nan_streak > 0 or not self.eval_finite:  # never a success with non-finite losses or evals at the end
            what = (
                f"the last {prog.nan_streak} step(s) had non-finite losses"
                if prog.nan_streak
                else "the last eval was non-finite"
            )
            raise UserError(f"training ended on non-finite values ({what}); {healthy_hint(config, prog.healthy_step)}")


def tta_line(name: str, m: dict[str, float], k: int, took: float) -> str:
    """One set's TTA scores: the vote of all K copies, one copy's, and the vote of the first 1, 2, 4, ... K."""
    valid = f"k{k}/valid_first" in m  # Sudoku: the chosen rule prefers valid solutions of the givens
    rule = "valid_first" if valid else "votes"
    sizes = prefix_sizes(k)
    by = " ".join(f"{m[f'k{j}/{rule}']:.3f}" for j in sizes)
    hard = (
        f"hard band {m['hard_tta_exact_accuracy']:.4f} (one copy {m['hard_exact_accuracy']:.4f}); "
        if "hard_tta_exact_accuracy" in m
        else ""
    )
    return (
        f"TTA {name} ({k} copies, most votes{', valid solutions first' if valid else ''}): "
        f"exact {m['tta_exact_accuracy']:.4f} (one copy {m['exact_accuracy']:.4f}); {hard}"
        f"by copies {'/'.join(map(str, sizes))}: {by}; took {fmt_seconds(took)}"
    )


def run(config: PretrainConfig, rt: Runtime, resumed: Resumed | None = None) -> None:
    """Train and evaluate. `resumed`: the checkpoint load_synced_config verified on rank 0 (read once)."""
    log = print if rt.d.is_main else (lambda *_: None)
    plan = create_plan(config, rt.d, rt.device)
    state = init_train_state(config, plan.train_meta, rt, plan.total_steps, log)
    prog, metrics_bytes = restore_train_state(config, state, resumed, rt, plan.train, log)
    if prog.passes_done >= plan.total_iters:  # a resumed run that had finished: nothing to train or evaluate
        log(finished_message(config, prog, state.step, already=True))
        return

    writes = WriteGuard(config.save_error, hint=lambda: resume_command(config), log=log)
    tracker = Tracker(config.checkpoint_path, enabled=rt.d.is_main)
    tracker.on_error = lambda e: writes.failed("metrics.jsonl", e)
    if rt.d.is_main:
        start_run(config, rt, state, plan, tracker, writes, metrics_bytes)

    loop = Loop(config, rt, state, plan, prog, tracker, writes, log)
    with loop.signals:
        for it in range(prog.passes_done, plan.total_iters):
            if loop.train_pass(it) or loop.eval_pass(it):
                break
    loop.finish()
