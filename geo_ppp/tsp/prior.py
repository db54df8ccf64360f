"""The TSP prior: labelled uniform instances cached on disk, rendered tours, the core's DDPM trainer.

Instances are drawn uniformly in the unit square in chunks of :data:`CHUNK` (chunk k from the
generator seeded ``(seed, k)``), labelled with fast-tsp, and each chunk is saved as one ``.npz`` in the
cache folder as soon as it is done: a stopped run keeps its labels and a rerun labels only the
missing chunks. The tours are drawn once (:func:`~geo_ppp.tsp.render.render_tours`); training
batches apply one of the 8 symmetries of the square to each image, which keeps an optimal tour
optimal and maps the renderer's pixel grid onto itself exactly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from geo_ppp.core.atomic import atomic_path
from geo_ppp.core.denoisers import UNetDenoiser
from geo_ppp.core.memory import check_memory
from geo_ppp.core.schedules import NoiseSchedule
from geo_ppp.core.training import BatchSource, TrainConfig, train_and_publish
from geo_ppp.core.unet import UNetConfig
from geo_ppp.core.weights import Prior
from geo_ppp.errors import ConfigError
from geo_ppp.tsp.instances import FAST_TSP_SECONDS, label_fast_tsp, random_instances
from geo_ppp.tsp.render import EDGE_VALUE, IMAGE_SIZE, MARGIN, render_tours

__all__ = ["CHUNK", "TSP_TRAIN", "TSP_UNET", "labelled_instances", "symmetric_batches", "train_tsp_prior"]

log = logging.getLogger(__name__)

CHUNK = 1000

#: The shipped TSP prior's architecture: a small U-Net, 64 -> 8 pixels, attention at 8 x 8.
TSP_UNET = {
    "in_channels": 1,
    "base_channels": 32,
    "channel_mult": (1, 2, 2, 2),
    "num_res_blocks": 1,
    "attention_levels": (3,),
    "attention_heads": 4,
    "dropout": 0.0,
}

#: The shipped TSP prior's training settings (sized for one CPU core over about two hours).
TSP_TRAIN = {
    "steps": 4500,
    "batch_size": 16,
    "lr": 5e-4,
    "warmup": 200,
    "ema_decay": 0.995,
    "checkpoint_every": 200,
    "cooldown": 1000,
}

#: Instances labelled for training by default.
TSP_INSTANCES = 20000


def labelled_instances(
    n: int, num: int, seed: int, cache: str | os.PathLike[str], progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``num`` uniform instances of ``n`` nodes with fast-tsp tours, labelled once and cached.

    Returns:
        Coordinates (num, n, 2) float32 and 0-based tours (num, n) int16.
    """
    from tqdm.auto import tqdm

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    coords, tours = [], []
    chunks = -(-num // CHUNK)
    for k in tqdm(range(chunks), disable=not progress, desc="labels", unit="chunk"):
        path = cache / f"tsp{n}_seed{seed}_chunk{k:05d}.npz"
        if path.exists():
            with np.load(path) as f:
                c, t = f["coords"], f["tours"]
        else:
            c = random_instances(CHUNK, n, seed=np.random.SeedSequence([seed, k]).generate_state(1)[0])
            t = np.stack([label_fast_tsp(x) for x in c]).astype(np.int16)
            c = c.astype(np.float32)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, coords=c, tours=t, seconds=FAST_TSP_SECONDS)
        coords.append(c)
        tours.append(t)
    return np.concatenate(coords)[:num], np.concatenate(tours)[:num]


def render_dataset(coords: np.ndarray, tours: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Images (N, 1, 64, 64) float16 in [-1, 1] of the labelled tours."""
    out = []
    for i in range(0, len(coords), batch):
        c = torch.from_numpy(coords[i : i + batch]).float()
        t = torch.from_numpy(tours[i : i + batch].astype(np.int64))
        out.append(render_tours(c, t).half())
    return torch.cat(out)


def symmetric_batches(images: torch.Tensor) -> BatchSource:
    """Batches drawn with replacement, each image under a random one of the square's 8 symmetries."""

    def source(gen: torch.Generator, batch_size: int) -> torch.Tensor:
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        sym = torch.randint(0, 8, (batch_size,), generator=gen)
        x = images[idx].float()
        x = torch.where((sym % 2 == 1).view(-1, 1, 1, 1), x.flip(-1), x)
        x = torch.where(((sym // 2) % 2 == 1).view(-1, 1, 1, 1), x.flip(-2), x)
        return torch.where((sym // 4 == 1).view(-1, 1, 1, 1), x.transpose(-1, -2), x)

    return source


#: the most nodes a training instance may have (a tour image of IMAGE_SIZE px shows them apart)
MAX_TRAIN_NODES = 200


def train_tsp_prior(
    out: str | os.PathLike[str],
    *,
    nodes: int = 50,
    instances: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
    unet: dict[str, object] | None = None,
    command: str = "",
) -> Prior:
    """Label instances, draw their tours, and train a DDPM prior on them; saves it to ``out``.

    The prior is published to ``out`` at every checkpoint, so a stopped run leaves a usable one.

    Args:
        out: output folder.
        nodes: nodes per training instance.
        instances: labelled instances (default :data:`TSP_INSTANCES`), cached in ``workdir/labels``.
        steps: override the shipped number of steps.
        batch_size: override the shipped batch size.
        seed: seeds instances, weights and training.
        workdir: checkpoints and the label cache (default ``out/.train``).
        resume: continue from a checkpoint.
        device: where to train.
        progress: progress bars.
        unet: U-Net overrides.
        command: the command line, recorded in the prior's metadata.
    """
    if not 4 <= nodes <= MAX_TRAIN_NODES:
        raise ConfigError(
            f"--nodes must be in 4-{MAX_TRAIN_NODES}, got {nodes}: a {IMAGE_SIZE} px tour image cannot show "
            "more nodes apart; train on TSP50-TSP100 and solve larger instances with that prior"
        )
    if instances is not None and instances < 1:
        raise ConfigError(f"--instances must be >= 1, got {instances}")
    num = TSP_INSTANCES if instances is None else instances
    # the rendered tours are held in memory for training (float32 images), beside the coordinates
    check_memory(num, IMAGE_SIZE * IMAGE_SIZE * 4 + nodes * 16, "--instances", "instance")
    workdir = Path(workdir) if workdir is not None else Path(out) / ".train"
    coords, tours = labelled_instances(nodes, num, seed, workdir / "labels", progress)
    images = render_dataset(coords, tours)
    log.info("rendered %d labelled TSP%d tours", len(images), nodes)
    config = UNetConfig(**{**TSP_UNET, **(unet or {})})  # type: ignore[arg-type]
    overrides = {k: v for k, v in {"steps": steps, "batch_size": batch_size}.items() if v is not None}
    settings = {**TSP_TRAIN, "seed": seed, **overrides}
    settings["cooldown"] = min(int(settings["cooldown"]), int(settings["steps"]) // 4)  # type: ignore[call-overload]
    train = TrainConfig(**settings)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    schedule = NoiseSchedule.create("linear", 1000)
    denoiser = UNetDenoiser(config)

    def meta_at(steps_done: int, losses: list[float]) -> dict[str, object]:
        recent = losses[-200:] or [float("nan")]
        return {
            "name": f"tsp{nodes}",
            "kind": "tsp",
            "nodes": nodes,
            "image_size": IMAGE_SIZE,
            "value_range": [-1.0, 1.0],
            "encoding": {"background": -1.0, "edge": 2 * EDGE_VALUE - 1, "node": 1.0, "margin_px": MARGIN},
            "data": f"{num} uniform instances in the unit square (chunks of {CHUNK}, seed {seed}), "
            f"tours from fast-tsp ({FAST_TSP_SECONDS} s each), 8 symmetries of the square as augmentation",
            "train": train.to_dict(),
            "trained_steps": steps_done,
            "final_loss": sum(recent) / len(recent),
            "command": command,
        }

    return train_and_publish(
        denoiser, schedule, symmetric_batches(images), train, out, meta_at, workdir, resume, device, progress
    )
