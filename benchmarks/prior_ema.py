"""The EMA lever of the land-cover prior: ``prior-check`` of a checkpoint's EMA weights against its raw weights.

    python benchmarks/prior_ema.py [--checkpoint geo_ppp/weights/landcover-chesapeake/train_checkpoint]
        [--prior landcover-chesapeake] [--num 256] [--seeds 0,1,2]

The training checkpoint holds both the optimised weights (``model.*``) and their exponential moving
average (``ema.*``, decay as in the prior's ``train`` metadata), which is what a prior ships. Prints one
row per set of weights: the statistics and checks of ``geo-ppp prior-check`` against the held-out
windows (the same windows and sample seeds for both rows of a seed; each seed draws other windows).
"""

from __future__ import annotations

import argparse
import copy
import itertools

from geo_ppp.core.weights import load_prior, read_safetensors
from geo_ppp.landcover.prior_check import check_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="geo_ppp/weights/landcover-chesapeake/train_checkpoint")
    parser.add_argument("--prior", default="landcover-chesapeake")
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--seeds", default="0", help="comma-separated: one row per seed and weights")
    args = parser.parse_args()
    prior = load_prior(args.prior)
    tensors, _ = read_safetensors(f"{args.checkpoint}/checkpoint.safetensors")
    variants = {}
    for prefix in ("ema", "model"):
        state = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        denoiser = copy.deepcopy(prior.denoiser)
        denoiser.load_state_dict(state)
        variants[prefix] = copy.copy(prior)
        variants[prefix].denoiser = denoiser.eval()
    decay = prior.meta.get("train", {}).get("ema_decay")
    print(f"prior {args.prior}, {prior.meta.get('trained_steps')} steps, EMA decay {decay}, {args.num} samples\n")
    print("| weights | seed | one-hot | mix TV | speckle x real | rare majorities | PD tree | MPA tree | PD low veg "
          "| MPA low veg | passed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed, (name, p) in itertools.product((int(s) for s in args.seeds.split(",")), variants.items()):
        c = check_prior(p, num=args.num, seed=seed).checks

        def v(key, c=c):
            value = c.get(key, {}).get("value")
            return "-" if value is None else f"{value:.2f}"

        passed = sum(bool(x.get("passed")) for x in c.values())
        print(f"| {'EMA' if name == 'ema' else 'raw'} | {seed} | {v('one_hotness')} | {v('class_mix_tv')} | "
              f"{v('speckle_ratio')} | {v('rare_majority_share')} | {v('patch_density_ratio[tree canopy]')} | "
              f"{v('mean_patch_area_ratio[tree canopy]')} | {v('patch_density_ratio[low vegetation]')} | "
              f"{v('mean_patch_area_ratio[low vegetation]')} | {passed}/{len(c)} |", flush=True)


if __name__ == "__main__":
    main()
