"""Train a building segmentation model on labelled imagery, within a step or time budget."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.errors import ModelError
from pipeline.model.checkpoint import save_model
from pipeline.model.dataset import ChipDataset, TrainingSample
from pipeline.model.device import autocast, is_cuda, memory_format
from pipeline.model.losses import LovaszBCELoss
from pipeline.model.net import ModelSpec, build_model
from pipeline.model.predict import predict_batch, predict_mosaic
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)

#: samples up to this side are evaluated in batched single forwards, larger ones as mosaics
_DIRECT_MAX_SIDE = 512


@dataclass(frozen=True)
class TrainConfig:
    """Training parameters; the run stops at the first budget reached.

    Budgets: ``epochs`` (an epoch = ``samples_per_epoch`` chips, default ~ every valid
    pixel once), ``max_steps`` (optimizer steps) and ``max_seconds`` (wall time, final
    validation included). The learning rate follows a one-cycle shape over the progress
    ``p = step / total_steps`` when a step or epoch budget is set (the time budget then
    only stops the run, so the same seed and data give the same model), otherwise
    ``p = elapsed / time_budget``: linear warm-up from ``lr / 25`` to ``lr`` over
    ``p < warmup``, then cosine decay to ``lr * final_lr_ratio``.
    Defaults are tuned for ~2 CPU cores and ~2 minutes (see ``bench/model_speed.py``):
    128 px chips x 16, lr 6e-3, gradient norm clipped at 1, colour jitter; rotations/flips
    (``geometric_augment``) off here, on for an AOI by default (``model.train``: measured
    better on real imagery; the synthetic sample town keeps them off), no weight
    averaging (``ema_decay``, e.g. 0.99, made no difference).
    """

    chip_size: int = 128
    batch_size: int = 16
    epochs: int | None = None
    max_steps: int | None = None
    max_seconds: float | None = 150.0
    lr: float = 6e-3
    weight_decay: float = 1e-4
    seed: int = 0
    val_every: int = 200
    amp: bool = True
    warmup: float = 0.1
    final_lr_ratio: float = 0.02
    bce_weight: float = 1.0
    lovasz_weight: float = 1.0
    grad_clip: float | None = 1.0
    ema_decay: float | None = None
    samples_per_epoch: int | None = None
    num_workers: int = 0
    augment: bool = True
    geometric_augment: bool = False

    def __post_init__(self) -> None:
        if self.epochs is None and self.max_steps is None and self.max_seconds is None:
            raise ModelError("TrainConfig: set at least one of epochs, max_steps, max_seconds")
        for name in ("chip_size", "batch_size", "epochs", "max_steps", "max_seconds", "lr"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ModelError(f"TrainConfig.{name} {v}: must be > 0")
        if not 0 <= self.warmup < 1:
            raise ModelError(f"TrainConfig.warmup {self.warmup}: must be in [0, 1)")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ModelError(f"TrainConfig.ema_decay {self.ema_decay}: must be in [0, 1)")
        if self.val_every < 0:
            raise ModelError(f"TrainConfig.val_every {self.val_every}: must be >= 0")


@dataclass
class TrainResult:
    """The best model (by validation IoU) and how training went."""

    model: nn.Module
    spec: ModelSpec
    val_iou: float
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    best_checkpoint: Path | None = None


def lr_at(progress: float, config: TrainConfig) -> float:
    """One-cycle learning rate at ``progress`` in [0, 1] (see :class:`TrainConfig`)."""
    p = min(max(progress, 0.0), 1.0)
    lr, w = config.lr, config.warmup
    if p < w:
        return lr * (0.04 + 0.96 * p / w)
    end = lr * config.final_lr_ratio
    return end + (lr - end) * 0.5 * (1.0 + math.cos(math.pi * (p - w) / (1.0 - w)))


def evaluate_iou(
    model: nn.Module,
    samples: Sequence[TrainingSample],
    *,
    device: torch.device,
    batch_size: int = 8,
) -> float:
    """Micro IoU over all valid pixels of ``samples`` at threshold 0.5:
    ``sum TP / sum (TP + FP + FN)`` (1.0 when both prediction and labels are empty)."""
    return iou_of(evaluate_counts(model, samples, device=device, batch_size=batch_size))


def iou_of(counts: tuple[int, int, int]) -> float:
    """``TP / (TP + FP + FN)`` of ``(TP, FP, FN)``; 1.0 when all are 0."""
    tp, fp, fn = counts
    union = tp + fp + fn
    return tp / union if union else 1.0


def evaluate_counts(
    model: nn.Module,
    samples: Sequence[TrainingSample],
    *,
    device: torch.device,
    batch_size: int = 8,
) -> tuple[int, int, int]:
    """``(TP, FP, FN)`` pixel counts of ``model`` on the valid pixels of ``samples``.

    Samples up to 512 px per side are predicted whole, in batches of equal shapes;
    larger ones with :func:`predict_mosaic` (256 px windows, 32 px overlap).
    """
    tp = fp = fn = 0
    groups: dict[tuple[int, ...], list[TrainingSample]] = {}
    for s in samples:
        groups.setdefault(s.image.shape, []).append(s)
    for shape, group in groups.items():
        if max(shape[1:]) <= _DIRECT_MAX_SIDE:
            probs = [
                p
                for i in range(0, len(group), batch_size)
                for p in predict_batch(
                    model, np.stack([s.image for s in group[i : i + batch_size]]), device=device
                )
            ]
        else:
            probs = [
                predict_mosaic(model, s.image, valid=s.valid, batch_size=batch_size, device=device)
                for s in group
            ]
        for s, p in zip(group, probs, strict=True):
            pred, lab = (p >= 0.5)[s.valid], s.label[s.valid].astype(bool)
            tp += int(np.count_nonzero(pred & lab))
            fp += int(np.count_nonzero(pred & ~lab))
            fn += int(np.count_nonzero(~pred & lab))
    return tp, fp, fn


class WeightEMA:
    """Exponential moving average of a model's weights (validated and returned instead of
    the raw weights): ``ema = d * ema + (1 - d) * w`` after every step with
    ``d = min(decay, (1 + n) / (10 + n))`` (short memory at the start); buffers such as
    BatchNorm statistics are copied as they are."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self._src = list(model.parameters())
        self._dst = list(self.model.parameters())
        self._src_buf = list(model.buffers())
        self._dst_buf = list(self.model.buffers())

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._dst, self._src, 1.0 - d)
        for dst, src in zip(self._dst_buf, self._src_buf, strict=True):
            dst.copy_(src)


def train_model(
    train: Sequence[TrainingSample],
    val: Sequence[TrainingSample],
    spec: ModelSpec,
    config: TrainConfig,
    *,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    init_from: nn.Module | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``spec`` on random augmented chips of ``train``; keep the best by ``val`` IoU.

    AdamW (fused) with the one-cycle schedule of :class:`TrainConfig`, gradient-norm
    clipping, loss :class:`~pipeline.model.losses.LovaszBCELoss` on valid pixels;
    channels_last tensors everywhere, bf16 autocast on CUDA (when ``config.amp``), plain
    fp32 on CPU. ``val`` is evaluated every ``val_every`` steps and at the end (on the
    moving average of the weights when ``ema_decay`` is set, see :class:`WeightEMA`); the
    returned model holds the best weights by val IoU, also written to
    ``checkpoint_dir / "best.pt"`` when given. Without ``val`` the last weights are kept
    and ``val_iou`` is NaN. ``init_from`` (same spec) is fine-tuned
    instead of a fresh random-init network.
    """
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(spec)
    if init_from is not None:
        try:
            model.load_state_dict(init_from.state_dict())
        except RuntimeError as exc:
            raise ModelError(f"init_from: weights do not fit {spec} ({exc})") from exc
    mf = memory_format(device)
    model.to(device=device, memory_format=mf).train()
    use_amp = config.amp and is_cuda(device)

    dataset = ChipDataset(
        train,
        config.chip_size,
        length=config.samples_per_epoch,
        augment=config.augment,
        geometric=config.geometric_augment,
        seed=config.seed,
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=False,
        drop_last=len(dataset) >= config.batch_size,
        num_workers=config.num_workers,
        pin_memory=is_cuda(device),
    )
    total_steps = _total_steps(config, len(loader))
    criterion = LovaszBCELoss(config.bce_weight, config.lovasz_weight)
    optimizer = make_optimizer(model, config)
    ema = WeightEMA(model, config.ema_decay) if config.ema_decay else None
    evaluated = ema.model if ema else model  # the weights that are validated and kept

    val_px = sum(int(s.valid.size) for s in val)
    val_seconds: float | None = None  # measured duration of one validation
    best_iou, best_state = -1.0, None
    best_path = None if checkpoint_dir is None else Path(checkpoint_dir) / "best.pt"
    history: list[dict] = []
    step, epoch, seen_px, loss_sum, loss_n = 0, 0, 0, 0.0, 0
    train_start = time.perf_counter()

    def validate() -> None:
        nonlocal best_iou, best_state, val_seconds, loss_sum, loss_n
        t = time.perf_counter()
        iou = evaluate_iou(evaluated, val, device=device, batch_size=8) if val else float("nan")
        val_seconds = time.perf_counter() - t
        rec = {
            "step": step,
            "epoch": epoch,
            "seconds": round(time.perf_counter() - start, 2),
            "lr": optimizer.param_groups[0]["lr"],
            "loss": loss_sum / loss_n if loss_n else float("nan"),
            "val_iou": iou,
        }
        history.append(rec)
        loss_sum, loss_n = 0.0, 0
        log.info("step %d: loss %.4f val IoU %.4f", step, rec["loss"], iou)
        if val and iou > best_iou:
            best_iou = iou
            best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
            if best_path is not None:
                _save_best(evaluated, spec, best_path, config, step, iou)

    def reserve() -> float:
        """Seconds kept for the final validation (estimated until measured once)."""
        if val_seconds is not None:
            return val_seconds
        elapsed = time.perf_counter() - train_start
        return val_px / max(seen_px / elapsed, 1.0) / 2.0 if seen_px and elapsed > 0 else 0.0

    def time_used() -> float:
        """Share of the time budget spent (0 without one)."""
        if config.max_seconds is None:
            return 0.0
        budget = config.max_seconds - (train_start - start) - reserve()
        return (time.perf_counter() - train_start) / max(budget, 1e-3)

    def progress_now() -> float:
        return step / total_steps if total_steps else time_used()

    bar = progress_bar(total=total_steps, enabled=progress, desc="train", unit="step")
    done = False
    while not done:
        dataset.set_epoch(epoch)
        for batch in loader:
            lr = lr_at(progress_now(), config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = batch["image"].to(device, non_blocking=True).float().contiguous(memory_format=mf)
            y = batch["label"].to(device, non_blocking=True)
            v = batch["valid"].to(device, non_blocking=True)
            with autocast(device, enabled=use_amp):
                logits = model(x)
            loss = criterion(logits.float(), y, v)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update()
            step += 1
            seen_px += x.shape[0] * x.shape[2] * x.shape[3]
            loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / loss_n:.3f}", best_iou=f"{max(best_iou, 0):.3f}")
            done = (total_steps is not None and step >= total_steps) or time_used() >= 1.0
            if done:
                break
            if config.val_every and step % config.val_every == 0:
                validate()
                model.train()
        epoch += 1
    bar.close()
    if not history or history[-1]["step"] != step:
        validate()
    if best_state is None:  # no validation data: keep the last (averaged) weights
        best_state = evaluated.state_dict()
        if best_path is not None:
            _save_best(evaluated, spec, best_path, config, step, float("nan"))
    model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - start
    log.info("trained %d steps in %.1f s; best val IoU %.4f", step, seconds, best_iou)
    return TrainResult(
        model=model,
        spec=spec,
        val_iou=best_iou if val else float("nan"),
        history=history,
        steps=step,
        seconds=seconds,
        best_checkpoint=best_path,
    )


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for all parameters: ~10x faster steps on CPU) when possible."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without fused support
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _total_steps(config: TrainConfig, steps_per_epoch: int) -> int | None:
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.epochs is not None:
        limits.append(config.epochs * steps_per_epoch)
    return min(limits) if limits else None


def _save_best(
    model: nn.Module, spec: ModelSpec, path: Path, config: TrainConfig, step: int, iou: float
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, spec, path, meta={"step": step, "val_iou": iou, "config": asdict(config)})
