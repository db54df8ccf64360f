"""Speed of land-cover inference per 256 x 256 window (1 m), ours against the paper's settings.

    python benchmarks/landcover_speed.py [--windows 8] [--paper-steps 3]

Ours: the shipped prior and default settings, end to end (weak labels, clustering, plug-and-play,
1 m refinement), batch of 1 and batch of ``--windows``. The paper's settings: an 85M-parameter
U-Net at 64 x 64 (guided-diffusion size) with 200 optimisation steps plus 100 ancestral finishing
steps; we time ``--paper-steps`` of each kind on the same machine and extrapolate (a full run takes
many minutes per window on 2 cores). Prints s/window and km2/hour. On CUDA (when present) it also
reports batched throughput.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from geo_ppp.core.denoisers import UNetDenoiser
from geo_ppp.core.unet import UNetConfig
from geo_ppp.core.weights import load_prior
from geo_ppp.io import read_image, read_labels_on_grid
from geo_ppp.landcover.infer import default_infer_config, infer_windows
from geo_ppp.landcover.weak import load_cooccurrence

ROOT = Path(__file__).resolve().parent.parent / "sample_tiles"
KM2_PER_WINDOW = 0.256 * 0.256
PAPER_UNET = UNetConfig(in_channels=4, base_channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=2,
                        attention_levels=(2, 3), attention_heads=4)


def batch(n: int):
    """n real windows (cycling the eight sample tiles)."""
    imgs, valids, weaks = [], [], []
    for i in range(n):
        img, valid, grid = read_image(ROOT / "naip" / f"patch{i % 8}.tif")
        weak, _ = read_labels_on_grid(ROOT / "nlcd" / f"patch{i % 8}.tif", grid)
        imgs.append(img)
        valids.append(valid)
        weaks.append(weak)
    return torch.tensor(np.stack(imgs)), torch.tensor(np.stack(valids))[:, None], torch.tensor(np.stack(weaks))


def time_ours(prior, n: int, device: str) -> float:
    """Seconds per window, end to end, for a batch of n."""
    cooc = load_cooccurrence("chesapeake")
    config = default_infer_config(prior)
    image, valid, weak = batch(n)
    infer_windows(image[:1], weak[:1], valid[:1], cooc, prior, config.with_pnp(steps=2), device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    infer_windows(image, weak, valid, cooc, prior, config, seeds=list(range(n)), device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def time_paper(steps: int, device: str) -> tuple[float, int]:
    """Extrapolated seconds per window at the paper's settings, and the U-Net's parameter count."""
    torch.manual_seed(0)
    net = UNetDenoiser(PAPER_UNET).to(device).freeze()
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(1, 4, 64, 64, device=device, requires_grad=True)
    t = torch.full((1,), 300, device=device)
    (net(x, t).pow(2).mean()).backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        (g,) = torch.autograd.grad(net(x, t).pow(2).mean(), [x])
    opt_step = (time.perf_counter() - t0) / steps
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(steps):
            net(x, t)
        fwd = (time.perf_counter() - t0) / steps
    return 200 * opt_step + 100 * fwd, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--paper-steps", type=int, default=3)
    parser.add_argument("--prior", default="landcover-chesapeake")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper-size extrapolation")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        prior = load_prior(args.prior).to(device)
        params = sum(p.numel() for p in prior.denoiser.parameters())
        steps = default_infer_config(prior).pnp_config().steps
        for n in (1, args.windows) if device == "cpu" else (1, args.windows, 4 * args.windows):
            s = time_ours(prior, n, device)
            rows.append((f"ours ({params / 1e6:.2f}M U-Net, {steps} steps), batch {n}", device, s))
        if args.no_paper:
            continue
        s, pp = time_paper(args.paper_steps, device)
        rows.append((f"paper ({pp / 1e6:.0f}M U-Net, 200 steps + 100 finishing), batch 1, extrapolated", device, s))
    print(f"threads: {torch.get_num_threads()}\n")
    print("| setting | device | s/window | km2/hour |")
    print("|---|---|---|---|")
    for name, device, s in rows:
        print(f"| {name} | {device} | {s:.2f} | {KM2_PER_WINDOW * 3600 / s:.1f} |")


if __name__ == "__main__":
    main()
