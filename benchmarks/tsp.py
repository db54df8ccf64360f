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


def sample_validity(prior, num: int, seed: int, steps: int = 50) -> dict[str, float]:
    """Fraction of unconditional DDIM samples whose drawn edges form one valid tour."""
    from scipy import ndimage

    from geo_ppp.core.random import NoiseSource
    from geo_ppp.core.sampling import SAMPLERS

    device = next(prior.denoiser.parameters()).device
    noise = NoiseSource(seed, num, device)
    with torch.no_grad():
        x = SAMPLERS["ddim"](prior.denoiser, prior.schedule, noise.randn(1, 64, 64), 1000, noise, steps=steps)
    v = ((x[:, 0].float().cpu().numpy() + 1) / 2).clip(0, 1)
    valid, nodes = 0, []
    for img in v:
        lab, k = ndimage.label(img > 0.75)
        if k < 4:
            nodes.append(k)
            continue
        pts = np.array(ndimage.center_of_mass(img > 0.75, lab, range(1, k + 1)))  # (row, col)
        nodes.append(k)
        s = np.linspace(0.2, 0.8, 12)
        seg = pts[:, None, None, :] + s[None, None, :, None] * (pts[None, :, None, :] - pts[:, None, None, :])
        r = seg[..., 0].round().astype(int).clip(0, 63)
        c = seg[..., 1].round().astype(int).clip(0, 63)
        along = img[r, c].mean(-1)
        adj = (along >= 0.25) & ~np.eye(k, dtype=bool)
        if (adj.sum(1) != 2).any():
            continue
        seen, prev, cur = {0}, -1, 0
        while True:
            nxt = [j for j in np.flatnonzero(adj[cur]) if j != prev]
            if not nxt or nxt[0] in seen:
                break
            prev, cur = cur, int(nxt[0])
            seen.add(cur)
        valid += len(seen) == k
    return {"samples": num, "valid_fraction": valid / num, "mean_nodes": float(np.mean(nodes))}


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
    args = ap.parse_args()
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
            valid = sample_validity(prior, args.samples, args.seed)
            print(
                f"\nunconditional DDIM samples (50 steps): {valid['samples']}, mean nodes found "
                f"{valid['mean_nodes']:.1f}, single valid tour without 2-opt: {100 * valid['valid_fraction']:.1f} %"
            )
            rows.append({"method": "prior samples", **valid})
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
