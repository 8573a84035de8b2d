"""The trainer: AdamW, warm-up + cosine, clipping, early stopping on validation NDCG@10 (full
ranking), seeded determinism, atomic checkpoints, exact resume, time budget, TensorBoard, DDP.

Determinism and resume: every epoch reseeds torch (dropout), numpy (batch order) and the loss's
sampling generator from (seed, epoch). A run resumed from the checkpoint of epoch e therefore
replays epochs e+1.. exactly as an uninterrupted run would.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from evorec.data.batches import EvalSet, TrainView, count_training_batches, training_batches
from evorec.errors import InputError, StateError
from evorec.evaluation import metrics as M
from evorec.evaluation.nextbasket import BasketTargets, validation_metrics
from evorec.evaluation.ranking import rank_targets
from evorec.models.checkpoint import ModelCheckpoint, ResumeState, load_checkpoint
from evorec.training import distributed as D
from evorec.training.losses import LossConfig, make_loss
from evorec.utils.hardware import check_precision, choose_precision, choose_threads, usable_cores
from evorec.utils.tracking import RunTracker

log = logging.getLogger(__name__)

_BUDGET_SYNC_STEPS = 8  # under DDP the time budget is checked (one tiny all-reduce) every this many steps


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(200, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    grad_clip: float | None = 1.0
    ema_decay: float | None = Field(
        None, gt=0, lt=1,
        description="validate, select and save an exponential moving average of the weights "
        "(per step: avg += (1 - d) * (w - avg), d warming up as min(ema_decay, (1 + step) / (10 + step)))",
    )
    max_len: int = Field(50, ge=1)
    windows: Literal["last", "all", "prefixes"] = "last"  # see evorec.data.batches.training_windows
    bucket: int = Field(
        50, ge=1, description="sort windows by length within groups of this many batches (less padding); 1: plain shuffle"
    )
    loss: LossConfig = Field(default_factory=LossConfig)
    eval_every_epochs: int = Field(1, ge=1)
    eval_batch_size: int = Field(256, ge=1, description="users per validation batch (256 keeps a batch x items block in cache on a CPU)")
    eval_users: int | None = Field(None, description="validate on a fixed random subset of users (speed)")
    metric: str = "NDCG@10"
    patience: int = Field(10, ge=1, description="evaluations without improvement before stopping")
    # (no exclude_seen here: early stopping reads eval.exclude_seen, given to the Trainer by the pipeline)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast where the device runs it faster (CPUs with AVX512-BF16 or AMX, CUDA with bf16), fp32 elsewhere "
        "(evorec.utils.hardware.choose_precision; the choice and its reason are logged and saved with the run); "
        "bf16 / fp32 force one; evaluation stays fp32",
    )
    threads: int | None = Field(
        None, ge=1,
        description="torch intra-op threads; default: torch's (one per core; evorec.utils.hardware.choose_threads warns "
        "when the load says other jobs hold the cores; a resume keeps the run's count); more than the usable cores is "
        "warned about",
    )
    time_budget_s: float | None = Field(None, gt=0)
    tensorboard: bool = True
    progress: bool = True

    @field_validator("precision", mode="before")
    @classmethod
    def _known_precision(cls, v: object) -> object:
        return check_precision(v)  # fp16 and unknown values: one clear message listing the valid ones


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0
    best_metric: float = -math.inf
    best_epoch: int = -1
    bad_evals: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    stopped: str = ""
    precision: str = ""  # what autocast ran: fp32 | bf16 (train.precision=auto resolved on this device)
    precision_reason: str = ""
    cpu: str = ""  # evorec.utils.hardware.CpuInfo.describe() of the machine that trained (last, on resume)
    threads: int = 0  # torch intra-op threads
    threads_reason: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise StateError("device 'cuda' asked for but no CUDA device is available")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if D.world_size() > 1:  # one GPU per process under torchrun
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cuda")


class _LossModule(nn.Module):
    """Wraps ``model.training_loss`` as ``forward`` so DistributedDataParallel can sync it."""

    def __init__(self, model, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.generator: torch.Generator | None = None

    def forward(self, batch):
        return self.model.training_loss(batch, self.loss_fn, self.generator)


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters, in a copy of the model.

    ``update`` after each optimizer step: ``avg += (1 - d) * (w - avg)`` with
    ``d = min(decay, (1 + n) / (10 + n))`` (n = updates so far), so the first updates follow the
    weights closely instead of dragging the random initialisation along. Buffers (item attributes,
    fitted tables, masks) are copied from the trained model by ``averaged()``, which returns the
    copy that is validated, selected and saved in place of the trained model."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        pairs = [(a, p) for a, p in zip(self.model.parameters(), model.parameters()) if p.is_floating_point()]
        self._avg = [a for a, _ in pairs]
        self._live = [p for _, p in pairs]
        self._source = model

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._avg, self._live, 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def averaged(self) -> nn.Module:
        """The averaged model, its buffers copied from the trained one (for scoring and saving)."""
        for a, b in zip(self.model.buffers(), self._source.buffers()):
            a.copy_(b)
        return self.model

    def state_dict(self) -> dict:
        return {"updates": self.updates, "state": self.model.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.updates = int(sd["updates"])
        self.model.load_state_dict(sd["state"])


class RunFiles(Protocol):
    """Where a training writes: ``evorec.experiments.runs.TrainingRun`` (which names the files)."""

    dir: Path

    @property
    def best_checkpoint(self) -> Path: ...

    @property
    def last_checkpoint(self) -> Path: ...

    @property
    def tensorboard_dir(self) -> Path: ...

    def write_history(self, doc: dict) -> None: ...


PayloadFn = Callable[[nn.Module, dict], ModelCheckpoint]
"""(model, TrainState as a dict) -> the checkpoint to save (config and vocabularies embedded)."""


class Trainer:
    """Trains ``model`` on ``train`` and early-stops on ``valid`` (full ranking). ``exclude_seen``
    is the evaluation's setting (``eval.exclude_seen``): the one place it is set; ``valid`` should
    then already be without repeat targets (``evorec.evaluation.protocols.drop_repeat_targets``).
    ``valid`` is an :class:`EvalSet` under the next-item protocol and the validation fold's
    :class:`BasketTargets` under ``eval.protocol`` next_basket / next_period: the trainer then
    selects on the metric the run is evaluated with (NDCG@10 over every item of the next basket),
    not on the first item of it."""

    def __init__(
        self, model, train: TrainView, valid: EvalSet | BasketTargets | None, cfg: TrainConfig, run: RunFiles, payload_fn: PayloadFn, *,
        exclude_seen: bool = True,
        tracker: RunTracker | None = None,
    ):
        self.model = model
        self.tracker = tracker  # MLflow: each epoch's record (process 0 only); see evorec.utils.tracking
        self.exclude_seen = exclude_seen
        self.train_view = train
        self.valid = valid
        self.cfg = cfg
        self.run = run
        self.payload_fn = payload_fn

    # -- helpers -----------------------------------------------------------------------------
    @property
    def world(self) -> int:
        return D.world_size()

    @property
    def rank(self) -> int:
        return D.rank()

    def _lr_lambda(self, total_steps: int):
        cfg = self.cfg

        def f(step: int) -> float:
            if cfg.warmup_steps and step < cfg.warmup_steps:
                return (step + 1) / cfg.warmup_steps
            if cfg.schedule == "constant":
                return 1.0
            prog = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))

        return f

    def _validation_subset(self) -> EvalSet | BasketTargets | None:
        es = self.valid
        n = len(es.es.users) if isinstance(es, BasketTargets) else len(es.users) if es is not None else 0
        if es is None or self.cfg.eval_users is None or self.cfg.eval_users >= n:
            return es
        rng = np.random.default_rng([self.cfg.seed, 991])
        idx = np.sort(rng.choice(n, self.cfg.eval_users, replace=False))
        return es.take(idx) if isinstance(es, BasketTargets) else _rows(es, idx)

    def evaluate(self, es: EvalSet | BasketTargets, device, model: nn.Module | None = None) -> dict[str, float]:
        """Full-ranking metrics of ``model`` (default: the trained one) on ``es``; under DDP each
        process ranks its share of the users and the ranks are gathered, so every process
        returns the same numbers (next-basket targets: every process ranks every user)."""
        model = self.model if model is None else model
        if isinstance(es, BasketTargets):
            return validation_metrics(model, self.train_view.seq, es, ks=(5, 10, 20), max_len=self.cfg.max_len,
                                      batch_size=self.cfg.eval_batch_size, exclude_seen=self.exclude_seen)
        was = model.training
        model.eval()
        if self.world > 1:
            es = _rows(es, D.shard(len(es.users)))
        with torch.no_grad():
            res = rank_targets(
                model, self.train_view.seq, es, max_len=self.cfg.max_len, batch_size=self.cfg.eval_batch_size,
                exclude_seen=self.exclude_seen, ks=(5, 10, 20), device=device, return_topk=False,  # ranks suffice
            )
        model.train(was)
        if self.world == 1:
            return res.aggregate((5, 10, 20))
        return M.summarize(D.gather_concat(res.rank), (5, 10, 20), res.suffix)

    # -- the loop ------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainState:
        cfg = self.cfg
        device = pick_device(cfg.device)
        threads, threads_reason = self._set_threads(resume)
        choice = choose_precision(cfg.precision, device)
        log.info("precision %s (train.precision=%s: %s); %s", choice.precision, cfg.precision, choice.reason, choice.cpu)

        def record_hardware(st: TrainState) -> TrainState:  # written into history.json and every checkpoint
            st.precision, st.precision_reason, st.cpu = choice.precision, choice.reason, choice.cpu
            st.threads, st.threads_reason = threads, threads_reason
            return st

        self.run.dir.mkdir(parents=True, exist_ok=True)
        model = self.model.to(device)
        state = record_hardware(TrainState())
        valid = self._validation_subset()

        if not model.trainable:
            t0 = time.perf_counter()
            model.fit(self.train_view)
            state.train_seconds = state.wall_seconds = time.perf_counter() - t0
            metrics = self.evaluate(valid, device) if valid is not None else {}
            state.history.append({"epoch": 1, "train_seconds": state.train_seconds, "wall_seconds": state.wall_seconds, **metrics})
            state.best_metric = metrics.get(cfg.metric, math.nan)
            state.best_epoch, state.epoch, state.stopped = 1, 1, "fitted"
            if self.rank == 0:
                self.payload_fn(model, state.to_dict()).save(self.run.best_checkpoint)
                self._write_history(state)
            return state

        model.prepare(self.train_view)  # before a resume's load_state_dict, which then restores the same state
        counts = torch.from_numpy(np.bincount(np.asarray(self.train_view.seq.item), minlength=model.n_items)).float()
        loss_fn = make_loss(cfg.loss, model.n_items, counts)
        wrapped = _LossModule(model, loss_fn)
        if self.world > 1:
            # static_graph: the same parameters take part in every step (true of every model here),
            # so DDP finds unused ones once instead of walking the autograd graph at every step
            wrapped = nn.parallel.DistributedDataParallel(wrapped, static_graph=True, gradient_as_bucket_view=True)
        forward = torch.compile(wrapped) if cfg.compile else wrapped
        decay, no_decay = [], []
        for n, p in model.named_parameters():
            (no_decay if p.ndim < 2 or "norm" in n.lower() or n.endswith("bias") else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.betas, fused=device.type in ("cpu", "cuda"),  # one kernel per step: ~40% less optimizer time on Beauty
        )
        windows_per_epoch = len(_window_count(self.train_view, cfg))
        n_batches = count_training_batches(windows_per_epoch, cfg.batch_size, cfg.bucket)
        steps_per_epoch = max(1, n_batches // self.world)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_lambda(steps_per_epoch * cfg.epochs))
        ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None

        def kept() -> nn.Module:  # what is validated, selected and saved: the weight average if kept
            return ema.averaged() if ema is not None else model

        last_path = self.run.last_checkpoint
        if resume and last_path.exists():
            ck = load_checkpoint(last_path)
            if ck.resume is None:
                raise InputError(f"--resume: {last_path} holds no optimizer state")
            model.load_state_dict(ck.weights)
            opt.load_state_dict(ck.resume.optimizer)
            sched.load_state_dict(ck.resume.scheduler)
            if ema is not None:
                if ck.resume.weight_average is None:
                    raise InputError(f"--resume: {last_path} has no weight average but train.ema_decay is set: resume with the run's own config")
                ema.load_state_dict(ck.resume.weight_average)
            state = record_hardware(TrainState(**ck.train_state))
            log.info("resumed from %s after epoch %d (step %d)", last_path, state.epoch, state.step)
            if state.stopped:
                return state
        elif resume:
            log.info("--resume: no %s yet, starting from scratch", last_path)

        writer = None
        if cfg.tensorboard and self.rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.run.tensorboard_dir), purge_step=state.step or None)
            except ImportError:
                log.warning("tensorboard is not installed: no TensorBoard scalars (pip install 'evorec[tensorboard]', or train.tensorboard: false)")

        wall0 = time.perf_counter() - state.wall_seconds
        model.train()
        from tqdm.auto import tqdm

        for epoch in range(state.epoch, cfg.epochs):
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            rng = np.random.default_rng([cfg.seed, epoch])
            wrapped_module = wrapped.module if self.world > 1 else wrapped
            wrapped_module.generator = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
            t_epoch = time.perf_counter()
            n_events = 0
            losses = []
            # disable=None: tqdm draws only on a terminal (no flood of bar lines in logs and CI).
            bar = tqdm(
                total=steps_per_epoch, desc=f"epoch {epoch + 1}", leave=False, mininterval=1.0,
                disable=True if (not cfg.progress or self.rank != 0) else None,
            )
            out_of_time = False
            batches = training_batches(
                self.train_view, cfg.max_len, cfg.batch_size, rng, mode=cfg.windows, device=device, bucket=cfg.bucket
            )
            for i, batch in enumerate(batches):
                if self.world > 1:
                    # Every process must take the same number of steps (gradients are all-reduced
                    # each step): a last round with fewer batches than processes is skipped.
                    if i >= n_batches - n_batches % self.world:
                        break
                    if i % self.world != self.rank:
                        continue
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=choice.bf16):
                    loss = forward(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update()
                state.step += 1
                n = int((batch.targets > 0).sum())
                n_events += n
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", ev_s=f"{n_events / max(time.perf_counter() - t_epoch, 1e-9):,.0f}")
                if writer is not None and state.step % 20 == 0:
                    writer.add_scalar("train/loss", losses[-1], state.step)
                    writer.add_scalar("train/lr", sched.get_last_lr()[0], state.step)
                if cfg.time_budget_s and (self.world == 1 or state.step % _BUDGET_SYNC_STEPS == 0):
                    # processes of a DDP run agree (every few steps) so that all stop at the same step
                    spent = state.train_seconds + time.perf_counter() - t_epoch
                    if D.any_rank(spent >= cfg.time_budget_s, device):
                        out_of_time = True
                        break
            bar.close()
            epoch_s = time.perf_counter() - t_epoch
            state.train_seconds += epoch_s
            state.epoch = epoch + 1
            record = {
                "epoch": state.epoch, "step": state.step, "loss": float(np.mean(losses)) if losses else math.nan,
                "epoch_seconds": epoch_s, "events_per_s": n_events * self.world / max(epoch_s, 1e-9),
                "train_seconds": state.train_seconds,
            }
            if writer is not None:
                writer.add_scalar("train/events_per_s", record["events_per_s"], state.step)
            do_eval = valid is not None and (state.epoch % cfg.eval_every_epochs == 0 or out_of_time or state.epoch == cfg.epochs)
            if do_eval:
                t_eval = time.perf_counter()
                scored = kept()
                metrics = self.evaluate(valid, device, scored)
                record.update({f"valid/{k}": v for k, v in metrics.items()})
                record["eval_seconds"] = time.perf_counter() - t_eval
                value = metrics[cfg.metric]
                if writer is not None:
                    for k, v in metrics.items():
                        writer.add_scalar(f"valid/{k}", v, state.step)
                if value > state.best_metric:
                    state.best_metric, state.best_epoch, state.bad_evals = value, state.epoch, 0
                    if self.rank == 0:
                        self.payload_fn(scored, state.to_dict()).save(self.run.best_checkpoint)
                else:
                    state.bad_evals += 1
            state.wall_seconds = time.perf_counter() - wall0
            record["wall_seconds"] = state.wall_seconds
            state.history.append(record)
            if self.tracker is not None and self.rank == 0:
                self.tracker.log_metrics(record, step=state.epoch)
            log.info("epoch %d: %s", state.epoch, {k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()})
            if out_of_time:
                state.stopped = f"time budget of {cfg.time_budget_s:g}s reached"
            elif state.bad_evals >= cfg.patience:
                state.stopped = f"no improvement of valid {cfg.metric} for {cfg.patience} evaluations"
            elif state.epoch == cfg.epochs:
                state.stopped = f"{cfg.epochs} epochs done"
            if self.rank == 0:
                last = self.payload_fn(model, state.to_dict())
                last.resume = ResumeState(opt.state_dict(), sched.state_dict(), ema.state_dict() if ema is not None else None)
                last.save(last_path)
                self._write_history(state)
            if state.stopped:
                break
        if writer is not None:
            writer.close()
        if valid is None and self.rank == 0:  # nothing to select on: the last model is the best
            self.payload_fn(kept(), state.to_dict()).save(self.run.best_checkpoint)
        return state

    def _set_threads(self, resume: bool) -> tuple[int, str]:
        """Set and log torch's intra-op threads: ``train.threads``, else on a resume the count the
        run trained with (the same reduction order as the uninterrupted run), else
        ``choose_threads``' default (torch's)."""
        cfg = self.cfg
        saved = 0
        if resume and cfg.threads is None and self.run.last_checkpoint.exists():
            saved = int(load_checkpoint(self.run.last_checkpoint).train_state.get("threads") or 0)
        if saved:
            n, why = saved, "the count the resumed run trained with"
        else:
            pick = choose_threads(cfg.threads, "train.threads")
            n, why = pick.threads, pick.reason
        torch.set_num_threads(n)
        log.info("%d torch intra-op thread(s): %s (%d usable cores)", n, why, usable_cores())
        return n, why

    def _write_history(self, state: TrainState) -> None:
        self.run.write_history(state.to_dict())


def _rows(es: EvalSet, idx: np.ndarray) -> EvalSet:
    """The evaluation targets at rows ``idx``."""
    return es.take(idx)


def _window_count(view: TrainView, cfg: TrainConfig) -> np.ndarray:
    from evorec.data.batches import training_windows

    return training_windows(view, cfg.max_len, cfg.windows)[0]
