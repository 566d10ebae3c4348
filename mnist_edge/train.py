"""TrainConfig -> train(cfg) -> checkpoint (evaluation lives in evaluate.py).

The original script's recipe: Adam, batch 64, learning rate 1e-3, shuffled every epoch, NLL loss
on log-softmax outputs, no schedule, no augmentation (`recipe="original"`). The default recipe
adds regularisers that leave the architecture alone: a cosine learning-rate decay per step and
random shifts of up to 2 pixels, which remove the original's overfitting, and a share of digits
shown as low-resolution captures read by the project's preprocessing (augment.py), so that small,
blurry digits are read too (docs/explanation/measurements.md).
Shuffling and augmentation draw from a generator seeded by (seed, epoch), so a run resumed from an
end-of-epoch checkpoint reaches the same weights as one that never stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt_io
from . import distributed as dist
from .augment import LOW_RES_SHARE, low_resolution, random_shift
from .edge import phases, policy, spec
from .edge.data import Split, load_split
from .edge.errors import ConfigError, OutputError
from .edge.machine import check_threads
from .model import MnistCNN

SCHEDULES = ("constant", "cosine")
# Named recipes: the settings each one fixes (everything else keeps TrainConfig's defaults).
RECIPES = {
    "default": {"lr_schedule": "cosine", "augment": True, "low_res": LOW_RES_SHARE},
    "original": {"lr_schedule": "constant", "augment": False, "weight_decay": 0.0, "low_res": 0.0},
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result (stored in the checkpoint)."""

    epochs: int = 10  # passes over the training images
    batch_size: int = 64  # images per optimizer step
    learning_rate: float = 1e-3  # Adam's step size (peak value when a schedule is used)
    seed: int = 1  # seeds weights, shuffling and augmentation
    limit: int | None = None  # train on the first N training images only
    test_limit: int | None = None  # evaluate on the first N test images only
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    data_dir: str | None = None  # MNIST location (see data.py for the search order)
    output_dir: str = "exports"  # where mnist_cnn.pt is written
    lr_schedule: str = "cosine"  # "cosine" (decay to 0 per step) or "constant" (original)
    augment: bool = True  # random shifts of up to 2 pixels in x and y (original: off)
    # share of training images shown as a low-resolution capture, preprocessed (original: 0)
    low_res: float = LOW_RES_SHARE
    weight_decay: float = 0.0  # Adam's L2 penalty
    device: str = "auto"  # auto (an accelerator when present), cpu, cuda or mps
    amp: bool = False  # automatic mixed precision (float16) on CUDA; ignored elsewhere

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (
                math.isfinite(self.learning_rate) and self.learning_rate > 0,
                f"learning rate must be a positive number, got {self.learning_rate}",
            ),
            (self.limit is None or self.limit >= 1, f"limit must be at least 1, got {self.limit}"),
            (
                self.test_limit is None or self.test_limit >= 1,
                f"test limit must be at least 1, got {self.test_limit}",
            ),
            (self.lr_schedule in SCHEDULES, f"lr schedule must be one of {', '.join(SCHEDULES)}"),
            (
                math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                f"weight decay must be a finite number >= 0, got {self.weight_decay}",
            ),
            (
                math.isfinite(self.low_res) and 0 <= self.low_res <= 1,
                f"low-res share must be between 0 and 1, got {self.low_res}",
            ),
            (self.device in dist.DEVICES, f"device must be one of {', '.join(dist.DEVICES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_threads(self.threads)

    @classmethod
    def from_recipe(cls, recipe: str = "default", **settings: object) -> TrainConfig:
        """A config of a named recipe; settings given as None keep the recipe's value."""
        if recipe not in RECIPES:
            raise ConfigError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
        given = {k: v for k, v in settings.items() if v is not None}
        return cls(**{**RECIPES[recipe], **given})  # type: ignore[arg-type]

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.output_dir) / ckpt_io.CHECKPOINT_NAME


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch did."""

    epoch: int  # 1-based
    train_loss: float  # mean NLL over the epoch's batches
    test_loss: float
    test_accuracy: float  # percent
    images_per_s: float  # training images per second (forward+backward+step)
    seconds: float  # wall time of the training part of the epoch


@dataclass(frozen=True)
class StepInfo:
    """Progress inside an epoch, for progress bars."""

    epoch: int
    step: int  # 1-based step within the epoch
    steps: int
    loss: float  # running mean of this epoch's loss
    images_per_s: float


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    config: TrainConfig
    history: list[EpochMetrics]
    resumed_from_epoch: int = 0
    is_main: bool = True  # False on ranks other than 0 of a distributed run (no history)

    @property
    def test_accuracy(self) -> float:
        return self.history[-1].test_accuracy


def to_tensor(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images (N, 1, 28, 28) float32 and labels (N,) int64."""
    x = torch.from_numpy(spec.normalize(split.images))[:, None]  # (N, 1, 28, 28)
    return x, torch.from_numpy(split.labels)


@torch.inference_mode()
def predict_logprobs(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = policy.BATCH
) -> torch.Tensor:
    """Model outputs for all of `x`, in batches."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def score(logp: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean NLL, accuracy in percent)."""
    loss = F.nll_loss(logp, y).item()
    acc = (logp.argmax(1) == y).double().mean().item() * 100
    return loss, acc


def _check_writable(folder: Path) -> None:
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a probe of its own per process: ranks of a torchrun job check the folder at once
        with tempfile.NamedTemporaryFile(prefix=".mnist-edge-write-test-", dir=folder):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write to the output folder {folder}: {exc.strerror or exc}; "
            "choose another with --output-dir"
        ) from exc


def _step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    xb: torch.Tensor,
    yb: torch.Tensor,
    device: torch.device,
    use_amp: bool,
) -> float:
    """One optimizer step (float16 autocast + loss scaling when use_amp); returns the loss."""
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        loss = F.nll_loss(model(xb), yb)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss.item()


def _lr_at(cfg: TrainConfig, global_step: int, total_steps: int) -> float:
    if cfg.lr_schedule == "cosine":
        return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * global_step / total_steps))
    return cfg.learning_rate


def _resume_config(cfg: TrainConfig, saved: dict) -> TrainConfig:
    """The saved run's settings, with this call's epochs, threads, data and output folders."""
    keep = {"epochs", "threads", "data_dir", "output_dir", "device", "amp"}
    fields = {k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__}
    fields.setdefault("low_res", 0.0)  # saved before the low-resolution share existed: none
    return TrainConfig(**{**fields, **{k: getattr(cfg, k) for k in keep}})


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    step_every: int = 10,
) -> TrainResult:
    """Train the CNN; write OUTPUT_DIR/mnist_cnn.pt after every epoch; return the history."""
    out_dir = Path(cfg.output_dir)
    _check_writable(out_dir)
    start_epoch, history, saved = 0, [], None
    if resume:
        saved = ckpt_io.load(cfg.checkpoint_path)
        cfg = _resume_config(cfg, saved.train_config)
        start_epoch = saved.epoch
        history = [EpochMetrics(**m) for m in saved.metrics]
        if start_epoch >= cfg.epochs:
            raise ConfigError(
                f"{cfg.checkpoint_path} already has {start_epoch} epochs; "
                f"pass --epochs larger than {start_epoch} to continue"
            )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = dist.resolve_device(cfg.device, dist.env_info().local_rank)
    info = dist.setup(device)
    try:
        return _run(cfg, device, info, start_epoch, history, saved, on_step, on_epoch, step_every)
    finally:
        dist.teardown()


def _run(
    cfg: TrainConfig,
    device: torch.device,
    info: dist.DistInfo,
    start_epoch: int,
    history: list[EpochMetrics],
    saved: ckpt_io.Checkpoint | None,
    on_step: Callable[[StepInfo], None] | None,
    on_epoch: Callable[[EpochMetrics], None] | None,
    step_every: int,
) -> TrainResult:
    """The epochs themselves, in this process (one rank of a distributed job, or the only one)."""
    train_split = load_split("train", cfg.data_dir, cfg.limit)
    test_split = load_split("test", cfg.data_dir, cfg.test_limit)
    x_train, y_train = (t.to(device) for t in to_tensor(train_split))
    x_test, y_test = (t.to(device) for t in to_tensor(test_split))
    phases.mark("data")

    torch.manual_seed(cfg.seed)
    core = MnistCNN()
    if saved is not None:
        core.load_state_dict(saved.model_state)
    core.to(device)
    model = dist.wrap(core, info, device)
    opt = torch.optim.Adam(core.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if saved is not None and saved.optimizer_state:
        opt.load_state_dict(saved.optimizer_state)
    use_amp = cfg.amp and device.type == "cuda"
    # Disabled, the scaler and autocast are pass-throughs: one step function for both cases.
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # Each rank takes every world_size-th image of one shared, seeded permutation (the tail that
    # does not divide evenly is dropped), so ranks run the same number of steps.
    n = len(y_train) // info.world_size * info.world_size
    per_rank = n // info.world_size
    steps = math.ceil(per_rank / cfg.batch_size)
    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(y_train), generator=gen)[:n][info.rank :: info.world_size]
        model.train()
        phases.mark(f"epoch {epoch + 1}")
        total, t0 = 0.0, time.perf_counter()
        for step in range(steps):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size].to(device)
            xb, yb = x_train[idx], y_train[idx]  # (B, 1, 28, 28), (B,)
            if cfg.low_res > 0:
                xb = low_resolution(xb.cpu(), gen, cfg.low_res).to(device)
            if cfg.augment:
                xb = random_shift(xb.cpu(), gen).to(device)
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, epoch * steps + step, cfg.epochs * steps)
            total += _step(model, opt, scaler, xb, yb, device, use_amp)
            if on_step and info.is_main and ((step + 1) % step_every == 0 or step + 1 == steps):
                done = min((step + 1) * cfg.batch_size, per_rank) * info.world_size
                rate = done / (time.perf_counter() - t0)
                on_step(StepInfo(epoch + 1, step + 1, steps, total / (step + 1), rate))
        seconds = time.perf_counter() - t0
        checksums = dist.rank_checksums(core, info) if info.enabled else []
        if info.is_main:  # rank 0 alone evaluates and writes the checkpoint
            test_loss, test_acc = score(predict_logprobs(core, x_test), y_test)
            metrics = EpochMetrics(
                epoch + 1, total / steps, test_loss, test_acc, n / seconds, seconds
            )
            history.append(metrics)
            ckpt_io.save(
                ckpt_io.Checkpoint(
                    path=cfg.checkpoint_path,
                    model_state=dist.to_cpu(core.state_dict()),
                    model_config=ckpt_io.model_config(),
                    train_config=asdict(cfg),
                    epoch=epoch + 1,
                    optimizer_state=dist.to_cpu(opt.state_dict()),
                    metrics=[asdict(m) for m in history],
                    test_accuracy=test_acc,
                    test_images=len(y_test),
                    data_sha256={"train": train_split.sha256, "test": test_split.sha256},
                    versions=ckpt_io.versions(),
                    distributed={
                        "world_size": info.world_size,
                        "device": device.type,
                        "rank_weight_checksums": checksums,
                    },
                )
            )
            phases.mark("checkpoint")
            if on_epoch:
                on_epoch(metrics)
        dist.barrier(info)  # no rank runs ahead of the checkpoint
    return TrainResult(
        cfg.checkpoint_path, cfg, history, resumed_from_epoch=start_epoch, is_main=info.is_main
    )
