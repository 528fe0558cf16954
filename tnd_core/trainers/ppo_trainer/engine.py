"""The student under accelerate: building the accelerator, the optimizer and the schedule, and the
one backward-clip-step sequence that both the PPO update and the CLM step use."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils.memory import clear_device_cache

from tnd_core.config import OPTIMIZER_NAMES, CustomPPOConfig
from tnd_core.errors import ConfigError


def make_accelerator(config: CustomPPOConfig) -> Accelerator:
    """A fresh Accelerator with the run's precision, accumulation and trackers."""
    from accelerate.state import AcceleratorState, GradientState

    # Several trainers may be built one after another in one process (tests, the app);
    # accelerate keeps process-wide singletons that would otherwise pin the first one's settings.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    log_with = trackers(config.report_to)
    try:
        return Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=log_with,
            project_dir=config.output_dir,
            step_scheduler_with_optimizer=False,
        )
    except ValueError as exc:
        raise ConfigError(
            "mixed_precision", config.mixed_precision, f"is not available on this machine ({exc})"
        ) from exc


def trackers(report_to: str) -> list[str] | None:
    """accelerate's `log_with` for `report_to`, naming the package to install when one is missing."""
    from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

    if report_to == "none":
        return None
    available = {
        "tensorboard": is_tensorboard_available(),
        "wandb": is_wandb_available(),
        "trackio": is_trackio_available(),
    }
    if report_to == "all":
        chosen = [name for name, ok in available.items() if ok]
        if not chosen:
            raise ConfigError(
                "report_to", report_to, "found no tracker installed: pip install tensorboard, wandb or trackio"
            )
        return chosen
    if not available[report_to]:
        raise ConfigError("report_to", report_to, f"needs the {report_to} package: pip install {report_to}")
    return [report_to]


def build_optimizer(config: CustomPPOConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """adamw (default), adam, sgd, adafactor, or any torch.optim class by name, with optimizer_kwargs."""
    name, kwargs, lr = config.optimizer_name, dict(config.optimizer_kwargs), config.learning_rate
    builtin = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    try:
        if name == "adafactor":
            from transformers.optimization import Adafactor

            options = {"scale_parameter": False, "relative_step": False, "warmup_init": False, **kwargs}
            return Adafactor(params, lr=lr, **options)
        cls = builtin.get(name) or getattr(torch.optim, name)
        if name in ("adamw", "adam") and not {"fused", "foreach"} & kwargs.keys():
            # As transformers' Trainer (adamw_torch_fused): on small models the per-tensor loop
            # of the default implementation costs several times the update itself.
            kwargs["fused"] = True
        return cls(params, lr=lr, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError("optimizer_kwargs", kwargs, f"not accepted by optimizer {name!r}: {exc}") from exc
    except AttributeError as exc:
        allowed = f"must be one of {', '.join(OPTIMIZER_NAMES)} or a torch.optim class"
        raise ConfigError("optimizer_name", name, allowed) from exc


def build_scheduler(config: CustomPPOConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """transformers' get_scheduler over `total_steps` optimizer steps, `warmup` of them warming up."""
    from transformers import get_scheduler

    try:
        return get_scheduler(
            config.scheduler_name,
            optimizer,
            num_warmup_steps=config.warmup,
            num_training_steps=total_steps,
            scheduler_specific_kwargs=dict(config.scheduler_kwargs),
        )
    except (TypeError, ValueError) as exc:
        allowed = f"not accepted by scheduler {config.scheduler_name!r}: {exc}"
        raise ConfigError("scheduler_kwargs", config.scheduler_kwargs, allowed) from exc


@dataclass
class Engine:
    """The prepared student with its optimizer and schedule, and the cross-process helpers of a step."""

    accelerator: Accelerator
    model: Any
    optimizer: Any
    lr_scheduler: Any
    max_grad_norm: float | None
    free_device_cache: bool = False

    @classmethod
    def prepare(
        cls, accelerator: Accelerator, student: Any, optimizer: Any, lr_scheduler: Any, config: CustomPPOConfig
    ) -> "Engine":
        """Hand the student, optimizer and schedule to accelerate (devices, DDP, precision)."""
        model, optimizer, lr_scheduler = accelerator.prepare(student, optimizer, lr_scheduler)
        return cls(accelerator, model, optimizer, lr_scheduler, config.max_grad_norm, config.optimize_device_cache)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def unwrapped(self) -> Any:
        """The student without accelerate's wrappers (DDP), for generation and saving."""
        return self.accelerator.unwrap_model(self.model)

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """Backward, then (once accumulation completes) clip, step the optimizer and the schedule."""
        acc = self.accelerator
        acc.backward(loss)
        if acc.sync_gradients and self.max_grad_norm is not None:
            acc.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        if acc.sync_gradients:
            self.lr_scheduler.step()
        self.optimizer.zero_grad()

    def timer(self) -> float:
        """A wall-clock reading after the device's queued work (CUDA runs asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over processes (itself on one process)."""
        if self.accelerator.num_processes > 1:
            return self.accelerator.reduce(values, reduction="mean")
        return values

    def any_process(self, flag: bool) -> bool:
        """True if `flag` is true on any process (stop requests come from the main process's UI)."""
        if self.accelerator.num_processes == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() > 0)

    def free_cache(self) -> None:
        """Release the accelerator's cached memory between phases when the config asks for it."""
        if self.free_device_cache:
            clear_device_cache(garbage_collection=True)
