"""TSP benchmark: baselines, the --no-prior ablation and the prior at two step counts; prior samples.

Seeded uniform instances (seed 1234, disjoint from the training chunks' SeedSequence([0, k]) streams)
are labelled with fast-tsp and cached in benchmarks/.cache/. Gap = sum of found lengths / sum of
fast-tsp lengths - 1. Seconds are per instance, wall clock, batched, with --threads torch threads.

    python benchmarks/tsp.py --n 50 --num 1280 --ours-num 128 --steps 32,128 --threads 2

The last table counts how many unconditional prior samples (DDIM) decode to a single valid tour
without 2-opt: nodes are the bright blobs of a sample, an edge joins two nodes when the mean value
along the segment between them is at least halfway from the background to the edge value, and a
sample passes when every node has exactly two edges and they form one cycle through all nodes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _markdown
import numpy as np
import torch

from geo_ppp.core.weights import load_prior
from geo_ppp.tsp.baselines import farthest_insertion, nearest_neighbour
from geo_ppp.tsp.decode import greedy_tours, two_opt
from geo_ppp.tsp.instances import label_fast_tsp, random_instances, tour_lengths
from geo_ppp.tsp.solve import SolveConfig, solve_tsp

CACHE = Path(__file__).resolve().parent / ".cache"


def labelled(n: int, num: int, seed: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"tsp{n}_seed{seed}_{num}.npz"
    if path.exists():
        with np.load(path) as f:
            return f["coords"], f["tours"]
    coords = random_instances(num, n, seed)
    tours = np.stack([label_fast_tsp(c, seconds) for c in coords])
    np.savez(path, coords=coords, tours=tours)
    return coords, tours


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def image_tour(img: np.ndarray) -> tuple[int, float, bool]:
    """Nodes found in an image (H, W) in [0, 1], the fraction of them with exactly two drawn edges, and
    whether its drawn edges form one tour through them.

    Nodes are the bright blobs; two nodes are joined when the segment between them stays on a drawn
    line (every sampled point >= 0.3) and passes through no third node. The image passes when every
    single-dot node has 2 edges, every merged blob an even number, and the edges connect all nodes.
    """
    from scipy import ndimage

    lab, k = ndimage.label(img > 0.75)
    if k < 4:
        return k, 0.0, False
    pts = np.array(ndimage.center_of_mass(img > 0.75, lab, range(1, k + 1)))  # (row, col)
    s = np.linspace(0.2, 0.8, 12)
    seg = pts[:, None, None, :] + s[None, None, :, None] * (pts[None, :, None, :] - pts[:, None, None, :])
    r = seg[..., 0].round().astype(int).clip(0, img.shape[0] - 1)
    c = seg[..., 1].round().astype(int).clip(0, img.shape[1] - 1)
    adj = (img[r, c].min(-1) >= 0.3) & ~np.eye(k, dtype=bool)
    # a segment that runs through a third node is two drawn edges, not one
    ab = pts[None, :, :] - pts[:, None, :]  # (k, k, 2)
    ap = pts[None, None, :, :] - pts[:, None, None, :]  # (k, k, k, 2): node m relative to i, per pair (i, j)
    t = (ap * ab[:, :, None, :]).sum(-1) / np.maximum((ab**2).sum(-1), 1e-9)[:, :, None]
    dist = np.linalg.norm(ap - t[..., None] * ab[:, :, None, :], axis=-1)
    through = ((t > 0.05) & (t < 0.95) & (dist < 1.5)).any(-1)
    adj &= ~through
    # a blob bigger than one dot holds several nodes: it may carry 4 edges (an even number)
    area = ndimage.sum(np.ones_like(img), lab, range(1, k + 1))
    deg = adj.sum(1)
    single = area <= 1.5 * np.median(area)
    two = float(np.mean(deg[single] == 2)) if single.any() else 0.0
    if (deg[single] != 2).any() or (deg[~single] % 2).any() or (deg[~single] == 0).any():
        return k, two, False
    seen, stack = {0}, [0]
    while stack:  # the drawn edges must connect every node: one closed walk through all of them
        for j in np.flatnonzero(adj[stack.pop()]).tolist():
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return k, two, len(seen) == k


def image_stats(images: np.ndarray) -> dict[str, float]:
    """:func:`image_tour` over images (N, H, W) in [0, 1]."""
    found = [image_tour(img) for img in images]
    return {
        "images": len(images),
        "valid_fraction": float(np.mean([ok for _, _, ok in found])),
        "degree2_fraction": float(np.mean([two for _, two, _ in found])),
        "mean_nodes": float(np.mean([k for k, _, _ in found])),
    }


def sample_validity(prior, num: int, seed: int, steps: int = 50) -> dict[str, float]:
    """:func:`image_stats` of unconditional DDIM samples of the prior."""
    from geo_ppp.core.random import NoiseSource
    from geo_ppp.core.sampling import SAMPLERS

    device = next(prior.denoiser.parameters()).device
    noise = NoiseSource(seed, num, device)
    with torch.no_grad():
        x = SAMPLERS["ddim"](prior.denoiser, prior.schedule, noise.randn(1, 64, 64), 1000, noise, steps=steps)
    return image_stats(((x[:, 0].float().cpu().numpy() + 1) / 2).clip(0, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--num", type=int, default=1280, help="instances for the baselines and --no-prior")
    ap.add_argument("--ours-num", type=int, default=128, help="the first instances solved with the prior")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--label-seconds", type=float, default=0.01)
    ap.add_argument("--prior", default="tsp50")
    ap.add_argument("--steps", default="32,128", help="comma-separated step counts for the prior")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--knn", type=int, default=10)
    ap.add_argument("--relaxation", default="sinkhorn")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a PnPConfig override")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, default=64, help="unconditional samples to check (0: skip)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    _markdown.add_option(ap)
    args = ap.parse_args()
    _markdown.record(args.markdown)
    torch.set_num_threads(args.threads)

    coords, ref = labelled(args.n, args.num, args.seed, args.label_seconds)
    ref_len = tour_lengths(coords, ref)
    rows = []

    def row(name, tours, seconds, subset=slice(None)):
        assert all(sorted(t.tolist()) == list(range(args.n)) for t in tours), name
        gap = tour_lengths(coords[subset], tours).sum() / ref_len[subset].sum() - 1
        k = len(tours)
        rows.append(
            {
                "method": name,
                "instances": k,
                "mean_length": float(tour_lengths(coords[subset], tours).mean()),
                "gap_percent": 100 * gap,
                "seconds_per_instance": seconds / k,
            }
        )
        print(
            f"| {name} | {k} | {rows[-1]['mean_length']:.4f} | {100 * gap:.2f} % | {seconds / k:.4f} |",
            flush=True,
        )

    print(
        f"TSP{args.n}, seed {args.seed}, fast-tsp reference mean length {ref_len.mean():.4f}, {args.threads} thread(s)"
    )
    print("| method | instances | mean length | gap | s / instance |\n|---|---|---|---|---|")
    t, s = timed(nearest_neighbour, coords)
    row("nearest neighbour", t, s)
    t, s = timed(farthest_insertion, coords)
    row("farthest insertion", t, s)
    t0 = time.perf_counter()
    t = two_opt(coords, nearest_neighbour(coords))
    row("nearest neighbour + 2-opt", t, time.perf_counter() - t0)
    t0 = time.perf_counter()
    t = two_opt(coords, greedy_tours(coords, np.ones((len(coords), args.n, args.n))))
    row("greedy edge + 2-opt (= --no-prior)", t, time.perf_counter() - t0)
    sub = slice(0, args.ours_num)
    t, s = timed(solve_tsp, coords[sub], None, SolveConfig(batch_size=args.batch_size), 0, args.device)
    row(f"--no-prior (first {args.ours_num})", t, s, sub)
    if args.prior != "none":
        prior = load_prior(args.prior, device=args.device)
        for steps in [int(v) for v in args.steps.split(",") if v]:
            cfg = SolveConfig(
                steps=steps,
                batch_size=args.batch_size,
                knn=args.knn,
                relaxation=args.relaxation,
                two_opt=False,
                pnp={k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)} or None,
            )
            greedy, s = timed(solve_tsp, coords[sub], prior, cfg, 0, args.device)
            improved, s2 = timed(two_opt, coords[sub], greedy, None, args.device)
            row(f"prior, {steps} steps", improved, s + s2, sub)
            row(f"prior, {steps} steps, no 2-opt", greedy, s, sub)
        if args.samples:
            from geo_ppp.tsp.render import render_tours

            real = render_tours(
                torch.as_tensor(coords[: args.samples]).float(), torch.as_tensor(ref[: args.samples])
            )
            truth = image_stats(((real[:, 0].numpy() + 1) / 2).clip(0, 1))
            valid = sample_validity(prior, args.samples, args.seed)
            print(
                "\n| images | number | nodes found | nodes with 2 drawn edges | one valid tour (no 2-opt) |"
            )
            print("|---|---|---|---|---|")
            for name, st in (("fast-tsp tours, rendered", truth), ("prior samples, DDIM 50 steps", valid)):
                print(
                    f"| {name} | {st['images']} | {st['mean_nodes']:.1f} | {100 * st['degree2_fraction']:.1f} % "
                    f"| {100 * st['valid_fraction']:.1f} % |"
                )
            rows.append({"method": "prior samples", **valid})
            rows.append({"method": "rendered fast-tsp tours", **truth})
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
