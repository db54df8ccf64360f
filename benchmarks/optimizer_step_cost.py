"""Per-step cost of the plug-and-play optimiser against a forward-only pass and a naive loop.

Three ways to run one step on the same denoiser and batch:

- forward:  ``eps_theta(x_t, t)`` under ``torch.no_grad()`` (the floor: no optimisation possible);
- pnp:      geo_ppp's step: frozen weights, ``autograd.grad`` of the loss w.r.t. the latent only;
- naive:    the research code's step: weights left trainable, ``loss.backward()`` fills weight
            gradients too (wasted work).

Usage: python benchmarks/optimizer_step_cost.py [--device cpu|cuda] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _markdown
import torch

from geo_ppp.core import NoiseSchedule, UNetConfig, UNetDenoiser, load_prior


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(
    den: UNetDenoiser, shape: tuple[int, int, int], batch: int, device: torch.device, repeats: int
) -> dict[str, float]:
    schedule = NoiseSchedule.create()
    den = den.to(device)
    eta = torch.randn(batch, *shape, device=device, requires_grad=True)
    t = torch.full((batch,), 300, device=device)
    eps = torch.randn(batch, *shape, device=device)

    def forward() -> None:
        with torch.no_grad():
            den(schedule.q_sample(eta, t, eps), t)

    def pnp() -> None:
        loss = (den(schedule.q_sample(eta, t, eps), t) - eps).pow(2).mean()
        torch.autograd.grad(loss, [eta])

    def naive() -> None:
        loss = (den(schedule.q_sample(eta, t, eps), t) - eps).pow(2).mean()
        loss.backward()
        eta.grad = None
        den.zero_grad(set_to_none=True)

    den.eval().requires_grad_(False)
    out = {"forward": _time(forward, device, repeats), "pnp": _time(pnp, device, repeats)}
    den.requires_grad_(True)
    out["naive"] = _time(naive, device, repeats)
    den.requires_grad_(False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)
    device = torch.device(args.device)
    torch.manual_seed(0)
    cases = [
        ("digits prior (shipped), 16x16", load_prior("digits").denoiser, (1, 16, 16), 64),
        (
            "land-cover size U-Net, 5x64x64",
            UNetDenoiser(
                UNetConfig(
                    in_channels=5,
                    base_channels=64,
                    channel_mult=(1, 2, 2, 2),
                    num_res_blocks=2,
                    attention_levels=(2,),
                )
            ),
            (5, 64, 64),
            8,
        ),
    ]
    print(
        f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print()
    print(
        "| model | params | batch | forward ms | pnp step ms | naive step ms | pnp / forward | naive / pnp |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, den, shape, batch in cases:
        n_params = sum(p.numel() for p in den.parameters())
        r = measure(den, shape, batch, device, args.repeats)
        print(
            f"| {name} | {n_params / 1e6:.2f}M | {batch} | {1e3 * r['forward']:.1f} | {1e3 * r['pnp']:.1f} "
            f"| {1e3 * r['naive']:.1f} | {r['pnp'] / r['forward']:.2f}x | {r['naive'] / r['pnp']:.2f}x |"
        )


if __name__ == "__main__":
    main()
