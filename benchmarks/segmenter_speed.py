"""The fast path's cost: a region segmenter's forward pass per 256 m window, batched, CPU and CUDA.

    python benchmarks/segmenter_speed.py [--batch 32] [--repeats 5]

The network is geo_ppp's segmenter at its default size (:class:`~geo_ppp.landcover.segmenter.SegmenterConfig`;
the cost does not depend on the weights), on 4-band 256 x 256 windows of 1 m pixels: features,
standardisation, network and softmax, as ``--segmenter`` runs them. On CUDA (when there is one)
under bf16 autocast. Prints ms per window and km2 per minute.
"""

from __future__ import annotations

import argparse
import time

import torch

from geo_ppp.landcover.segmenter import Segmenter, SegmenterConfig

WINDOW_KM2 = 0.256 * 0.256


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig()).eval()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch}\n")
    print("| device | ms per 256 x 256 window | km2 per minute |\n|---|---|---|")
    for device in devices:
        net = model.to(device)
        x = torch.rand(args.batch, 4, 256, 256, device=device) * 255
        net.probabilities(x)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            net.probabilities(x)
        if device == "cuda":
            torch.cuda.synchronize()
        per_window = (time.perf_counter() - t0) / (args.repeats * args.batch)
        label = "cuda (bf16 autocast)" if device == "cuda" else "cpu"
        print(f"| {label} | {1000 * per_window:.2f} | {WINDOW_KM2 / per_window * 60:.0f} |")


if __name__ == "__main__":
    main()
