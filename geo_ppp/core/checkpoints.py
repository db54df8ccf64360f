"""Training checkpoints: the optimiser's state as tensors, what a checkpoint must match to be resumed.

A checkpoint records its training config and an identity (the model's settings, a digest of the
data, the options that shaped them); :func:`resume_problem` says, in one line with the fix, why a run
may not continue it. Stdlib, torch and json only (the core).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["carry", "inside", "model_identity", "optimizer_tensors", "restore_optimizer", "resume_problem"]


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """An optimiser's state as tensors (moments, steps) and JSON-able metadata (groups, scalars)."""
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, float]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = float(value)
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Load what :func:`optimizer_tensors` gave back into ``opt``."""
    state: dict[int, dict[str, object]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


#: Training settings a user sets with these options (the others have no option).
_OPTIONS = {"batch_size": "--batch-size", "seed": "--seed", "loss_weighting": "--loss-weighting"}


def model_identity(model: torch.nn.Module) -> dict[str, object]:
    """The model's settings that a checkpoint must share (its U-Net config and prediction target)."""
    config = getattr(model, "config", None)
    found: dict[str, object] = {}
    if config is not None and hasattr(config, "to_dict"):
        found = {
            f"--{k.replace('_', '-')}" if k == "base_channels" else f"U-Net {k}": v
            for k, v in config.to_dict().items()
        }
    if hasattr(model, "prediction"):
        found["--prediction"] = model.prediction
    return json.loads(json.dumps(found, default=str))  # lists, not tuples: compares with the saved


def resume_problem(
    ckpt: Path,
    meta: Mapping[str, str],
    config: Mapping[str, object],
    defaults: Mapping[str, object],
    resumable: tuple[str, ...],
    identity: Mapping[str, object],
) -> str | None:
    """Why the checkpoint ``ckpt`` cannot be continued by this run (one line with the fix), or None."""
    saved_config = json.loads(meta["train_config"])
    saved = {_OPTIONS.get(k, k): saved_config.get(k, v) for k, v in defaults.items() if k not in resumable}
    now = {_OPTIONS.get(k, k): v for k, v in config.items() if k not in resumable}
    saved_identity = json.loads(meta.get("identity", "{}"))  # older checkpoints record none: not compared
    saved.update(saved_identity)
    now.update({k: v for k, v in identity.items() if k in saved_identity})
    differ = [k for k in now if k in saved and saved[k] != now[k]]
    where = ckpt.parent
    if differ:
        was = " and ".join(f"{k} {_short(saved[k])} (this run: {_short(now[k])})" for k in differ)
        return (
            f"the checkpoint in {where} was trained with {was}; pass the same "
            f"{'value' if len(differ) == 1 else 'values'}, or --overwrite / --no-resume to start over"
        )
    step = int(meta["step"])
    steps = int(config["steps"])  # type: ignore[call-overload]
    if step > steps:
        return (
            f"the checkpoint in {where} is at step {step}, past --steps {steps}; pass --steps {step} or more "
            f"to continue it, or --overwrite / --no-resume to train {steps} steps afresh"
        )
    return None


def _short(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it."""
    p, f = os.path.realpath(path.absolute()), os.path.realpath(folder.absolute())
    return p == f or p.startswith(f.rstrip(os.sep) + os.sep)


def carry(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Hard-link (or copy) the files under ``src`` into ``dst`` (its tree), but not the top-level ``skip``."""
    if not src.is_dir():
        return
    for path in sorted(src.rglob("*")):
        if path.relative_to(src).parts[0] in skip:
            continue
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
