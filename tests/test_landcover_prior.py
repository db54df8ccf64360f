"""The land-cover prior: training data (held-out blocks, crops), v-prediction, and prior-check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from geo_ppp.cli import main
from geo_ppp.core import NoiseSchedule, UNetConfig, UNetDenoiser, load_prior
from geo_ppp.core.annealing import PaperT
from geo_ppp.core.training import TrainConfig, train_ddpm
from geo_ppp.errors import ConfigError, InputError
from geo_ppp.geo.legend import load_legend
from geo_ppp.io.label_windows import (
    HOLDOUT_BLOCK_M,
    _window_split,
    holdout_block,
    label_dataset,
    sample_label_windows,
)
from geo_ppp.landcover.prior import LabelSource, train_landcover_prior
from geo_ppp.landcover.prior_check import CheckLimits, compare_statistics, map_statistics, one_hotness
from geo_ppp.landcover.prior_data import augmented_batches, onehot_pm1
from tests.conftest import NLCD, ROOT

LULC = ROOT / "pipelines" / "data" / "chesapeake-lulc-1m" / "Baywide_7class_20132014_E1300000_N1770000.tif"
TINY = {"base_channels": 8, "channel_mult": (1, 2, 2, 2), "num_res_blocks": 1, "attention_levels": ()}


# --- held-out blocks and crops ---------------------------------------------------------------


B = HOLDOUT_BLOCK_M


def test_holdout_lattice_holds_out_one_block_in_five():
    flags = [holdout_block(bx * B + 10, by * B + 10) for bx in range(20) for by in range(20)]
    assert sum(flags) == 400 // 5


def test_window_split_classifies_by_corners():
    # find a held-out block, then windows inside it, across its edge and far from it
    bx, by = next((bx, by) for bx in range(10) for by in range(10) if holdout_block(bx * B + 1, by * B + 1))
    x0, y0 = bx * B, by * B
    inside = (slice(x0 + 100, x0 + 356), slice(y0 + 100, y0 + 356))
    across = (slice(x0 - 100, x0 + 156), slice(y0 + 100, y0 + 356))
    assert _window_split(inside) == "holdout"
    assert _window_split(across) == "edge"
    tx, ty = next((x, y) for x in range(10) for y in range(10) if not any(
        holdout_block((x + dx) * B + 1, (y + dy) * B + 1) for dx in (0, 1) for dy in (0, 1)))
    train = (slice(tx * B + B - 128, tx * B + B + 128), slice(ty * B + B - 128, ty * B + B + 128))
    assert _window_split(train) == "train"


@pytest.fixture(scope="module")
def lulc_windows():
    ds = label_dataset([LULC])
    legend = load_legend("chesapeake")
    return {split: sample_label_windows(ds, legend, 12, seed=3, split=split) for split in ("train", "holdout")}


def test_train_and_holdout_windows_are_real_maps(lulc_windows):
    for windows in lulc_windows.values():
        assert windows.shape[1:] == (64, 64)
        assert windows.min() >= 0 and windows.max() < 4
    # the two splits are different places: no window of one equals a window of the other
    for w in lulc_windows["holdout"]:
        assert not any(np.array_equal(w, v) for v in lulc_windows["train"] if (w != 1).any())


def test_unknown_split_is_refused():
    with pytest.raises(ConfigError, match="unknown split"):
        sample_label_windows(label_dataset([LULC]), load_legend("chesapeake"), 1, split="test")


def test_crops_are_pieces_of_the_windows():
    pool = onehot_pm1(np.random.default_rng(0).integers(0, 4, (3, 64, 64)), 4)
    batch = augmented_batches([pool], [1.0], crop=32)(torch.Generator().manual_seed(0), 6)
    assert batch.shape == (6, 4, 32, 32)
    assert set(batch.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(batch.sum(1), torch.full((6, 32, 32), -2.0))  # still one-hot
    with pytest.raises(ConfigError, match="crop"):
        augmented_batches([pool], [1.0], crop=65)


# --- v-prediction and min-SNR ----------------------------------------------------------------


def test_v_prediction_converts_to_the_true_noise():
    sched = NoiseSchedule.create("cosine", 1000)
    den = UNetDenoiser(UNetConfig(in_channels=2, base_channels=8, channel_mult=(1, 2)), "v", sched)
    x0, eps = torch.randn(3, 2, 8, 8), torch.randn(3, 2, 8, 8)
    t = torch.tensor([1, 500, 999])
    x_t = sched.q_sample(x0, t, eps)
    v = sched.sqrt_abar(t, x0) * eps - sched.sqrt_one_minus_abar(t, x0) * x0
    den.net.forward = lambda x, tt: v  # an oracle network that predicts v exactly
    assert torch.allclose(den(x_t, t), eps, atol=1e-4)


def test_v_prediction_needs_a_schedule_and_a_known_name():
    with pytest.raises(ConfigError, match="schedule"):
        UNetDenoiser(UNetConfig(), "v")
    with pytest.raises(ConfigError, match="unknown prediction"):
        UNetDenoiser(UNetConfig(), "x0", NoiseSchedule.create())


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_training_lowers_the_loss(prediction):
    torch.manual_seed(0)
    sched = NoiseSchedule.create("cosine", 1000)
    den = UNetDenoiser(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2)), prediction, sched)
    data = torch.sign(torch.randn(32, 1, 1, 1)).expand(32, 1, 8, 8).contiguous()  # flat one-class maps
    cfg = TrainConfig(steps=150, batch_size=16, lr=3e-3, warmup=10, loss_weighting="min_snr")
    losses = train_ddpm(den, sched, data, cfg, progress=False).losses
    assert np.mean(losses[-30:]) < 0.7 * np.mean(losses[:10])


def test_unknown_loss_weighting_is_refused():
    with pytest.raises(ConfigError, match="loss_weighting"):
        TrainConfig(loss_weighting="p2")


# --- training a land-cover prior ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_landcover_prior(tmp_path_factory):
    out = tmp_path_factory.mktemp("lc") / "prior"
    train_landcover_prior(
        out, [LabelSource((str(LULC),), 1.0, 24)], "chesapeake", steps=3, batch_size=8, unet=TINY,
        progress=False, train_overrides={"checkpoint_every": 2},
    )
    return out


def test_trained_prior_round_trips_with_its_diffusion(tiny_landcover_prior):
    cfg = json.loads((tiny_landcover_prior / "config.json").read_text())
    assert cfg["prediction"] == "v" and cfg["schedule"]["name"] == "cosine"
    assert cfg["meta"]["holdout"] == {"block_m": 512.0, "every": 5, "rule": cfg["meta"]["holdout"]["rule"]}
    assert cfg["meta"]["crop"] == 32
    assert cfg["meta"]["trained_steps"] == 3
    prior = load_prior(tiny_landcover_prior)
    assert prior.denoiser.prediction == "v"
    assert prior.denoiser.config.attention_levels == ()
    # fully convolutional: takes the 64-cell window it was not trained on
    assert prior.denoiser(torch.zeros(1, 4, 64, 64), 10).shape == (1, 4, 64, 64)


def test_too_few_windows_for_the_batch_says_so(tmp_path):
    with pytest.raises(ConfigError, match="fewer than the batch size"):
        train_landcover_prior(
            tmp_path / "p", [LabelSource((str(LULC),), 1.0, 3)], "chesapeake", steps=1, batch_size=8,
            unet=TINY, progress=False,
        )


def test_all_nodata_labels_say_so(tmp_path):
    import rasterio

    src = tmp_path / "empty.tif"
    profile = {"driver": "GTiff", "width": 300, "height": 300, "count": 1, "dtype": "uint8", "nodata": 15,
               "crs": "EPSG:26917", "transform": rasterio.Affine(1, 0, 500000, 0, -1, 4200000)}
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(np.full((1, 300, 300), 15, np.uint8))
    with pytest.raises(InputError, match="only nodata"):
        train_landcover_prior(tmp_path / "p", [LabelSource((str(src),), 1.0, 4)], "chesapeake", steps=1,
                              batch_size=2, unet=TINY, progress=False)


# --- statistics (oracles) ---------------------------------------------------------------------


def test_statistics_of_known_maps():
    uniform = np.ones((2, 16, 16), np.int64)
    checker = (np.indices((16, 16)).sum(0) % 2)[None].repeat(2, 0)
    s_uni = map_statistics(uniform, 4, 4.0)
    s_chk = map_statistics(checker, 4, 4.0)
    assert s_uni["speckle"] == 0.0 and s_chk["speckle"] == 1.0
    assert s_uni["class_mix"] == [0.0, 1.0, 0.0, 0.0]
    assert s_chk["class_mix"][:2] == [0.5, 0.5]
    assert s_uni["majority_share"][1] == 1.0
    # one patch of 16x16 cells of 4 m: 0.4096 ha over 0.4096 ha per map
    lan = s_uni["landscape"]["1"]
    assert lan["patch_density"] == pytest.approx(100 / 0.4096)
    assert lan["mean_patch_area"] == pytest.approx(0.4096)
    assert lan["edge_density"] == 0.0
    assert s_uni["landscape"]["0"]["mean_patch_area"] is None


def test_two_squares_make_two_patches():
    m = np.zeros((1, 20, 20), np.int64)
    m[0, 2:6, 2:6] = 1
    m[0, 12:18, 12:18] = 1
    lan = map_statistics(m, 2, 1.0)["landscape"]["1"]
    area_ha = 400 / 1e4
    assert lan["patch_density"] == pytest.approx(2 / area_ha * 100)
    assert lan["mean_patch_area"] == pytest.approx((16 + 36) / 2 / 1e4)
    assert lan["edge_density"] == pytest.approx((16 + 24) / area_ha)


def test_one_hotness():
    onehot = onehot_pm1(np.zeros((1, 4, 4), np.int64), 3)
    assert one_hotness(onehot) == 1.0
    assert one_hotness(torch.zeros(1, 3, 4, 4)) == 0.5


def test_identical_sets_pass_and_speckled_samples_fail():
    rng = np.random.default_rng(0)
    real = np.ones((20, 32, 32), np.int64)
    real[:, :10, :] = 2
    r = map_statistics(real, 4, 4.0)
    names = ["w", "t", "l", "b"]
    same = compare_statistics({"one_hotness": 1.0, **r}, r, CheckLimits(), names)
    assert all(c["passed"] for c in same.values())
    noisy = rng.integers(0, 4, real.shape)
    bad = compare_statistics({"one_hotness": 0.7, **map_statistics(noisy, 4, 4.0)}, r, CheckLimits(), names)
    assert not bad["one_hotness"]["passed"]
    assert not bad["class_mix_tv"]["passed"]
    assert not bad["speckle_ratio"]["passed"]
    assert not bad["rare_majority_share"]["passed"]  # water/built majorities, which real maps never have


# --- the schedule of the paper ------------------------------------------------------------------


def test_paper_t_schedule_is_the_notebooks():
    s = 200
    sched = PaperT(t_max=430, t_min=1, amplitude=0.3, cycles=s / (20 * math.pi))
    ours = np.array([sched(i, s) for i in range(s)])
    notebook = np.array([min(1000, max(1, 1000 * ((s - i) // 3 + (s - i) // 10 * math.cos(i / 10)) / s))
                         for i in range(s)])
    assert ours[0] == 430
    assert np.abs(ours - notebook).max() <= 6  # the notebook floors (S - i) // 3 and // 10


def test_paper_preset_resolves():
    from geo_ppp.landcover.infer import default_infer_config

    cfg = default_infer_config(None, "paper").pnp_config()
    assert (cfg.steps, cfg.adam_beta1, cfg.finish, cfg.finish_t, cfg.finish_renoise) == (200, 0.0, "ddpm", 100, False)
    with pytest.raises(ConfigError, match="unknown preset"):
        default_infer_config(None, "fast")


# --- prior-check on the command line -------------------------------------------------------------


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


def test_prior_check_writes_report_and_sheet(tiny_landcover_prior, tmp_path):
    out = tmp_path / "check"
    res = CliRunner().invoke(main, ["prior-check", str(tiny_landcover_prior), "--num", "4", "--steps", "4",
                                    "--out", str(out)])
    assert res.exit_code == 3, res.output  # an untrained prior fails its checks...
    report = json.loads((out / "prior_check.json").read_text())
    assert report["passed"] is False and not report["checks"]["one_hotness"]["passed"]
    assert report["settings"]["real"]["split"] == "holdout"
    assert report["real"]["count"] == 4
    assert "FAIL" in res.output
    # the training data's own distance to the held-out windows, check by check (one-hot by nature)
    floor = report["training_windows_checks"]
    assert set(floor) == set(report["checks"]) and floor["one_hotness"]["passed"]
    assert report["training_windows"]["count"] == 4 and "training data" in res.output
    from matplotlib import image as mpimg

    sheet = mpimg.imread(out / "prior_check.png")
    assert sheet.shape[1] > sheet.shape[0]  # samples | real windows, side by side
    # ...and the report is not overwritten without --overwrite
    again = CliRunner().invoke(main, ["prior-check", str(tiny_landcover_prior), "--num", "4", "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_prior_check_with_labels(tiny_landcover_prior, tmp_path):
    out = tmp_path / "check"
    res = CliRunner().invoke(main, ["prior-check", str(tiny_landcover_prior), "--num", "3", "--steps", "3",
                                    "--labels", str(LULC), "--out", str(out)])
    assert res.exit_code == 3, res.output
    report = json.loads((out / "prior_check.json").read_text())
    assert report["settings"]["real"]["split"] == "all" and report["training_windows_checks"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}"], "config.json"),  # not a prior folder
        (["digits"], "not a land-cover prior"),
        (["{prior}", "--labels", str(NLCD)], "not in legend"),  # NLCD codes are another legend
        (["{prior}", "--num", "0"], "--num"),
    ],
)
def test_prior_check_bad_input_writes_nothing(tiny_landcover_prior, tmp_path, args, message):
    empty = tmp_path / "not_a_prior"
    empty.mkdir()
    out = tmp_path / "check"
    args = [a.format(tmp=empty, prior=tiny_landcover_prior) for a in args]
    before = _files(tmp_path)
    res = CliRunner().invoke(main, ["prior-check", *args, "--num" if "--num" not in args else "--seed", "2",
                                    "--out", str(out)])
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output
    assert _files(tmp_path) == before


def test_generate_draws_land_cover_in_the_legend_colours(tiny_landcover_prior, tmp_path):
    out = tmp_path / "s.png"
    res = CliRunner().invoke(main, ["generate", "--prior", str(tiny_landcover_prior), "--sampler", "ddim",
                                    "--steps", "3", "--num", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    from matplotlib import image as mpimg

    rgb = (mpimg.imread(out)[..., :3] * 255).round().astype(int)
    colours = {tuple(c) for c in load_legend("chesapeake").colors} | {(255, 255, 255)}
    assert {tuple(p) for p in rgb.reshape(-1, 3)} <= colours
    assert np.load(out.with_suffix(".npy")).shape == (2, 4, 64, 64)


def test_a_stopped_runs_published_prior_may_be_resumed_into(tiny_landcover_prior, tmp_path):
    from geo_ppp.cli.train import _unfinished_prior

    finished = json.loads((tiny_landcover_prior / "config.json").read_text())
    assert not _unfinished_prior(tiny_landcover_prior)  # 3 of 3 steps: a finished prior is refused
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    finished["meta"]["trained_steps"] = 2
    (stopped / "config.json").write_text(json.dumps(finished))
    assert _unfinished_prior(stopped)
    assert not _unfinished_prior(tmp_path / "nothing")


def test_class_aware_sampling_draws_rare_class_windows_more_often():
    from geo_ppp.landcover.prior_data import window_weights

    idx = np.full((40, 16, 16), 1)
    idx[:4, :8] = 2  # four windows hold a rare class in half their cells
    pool = onehot_pm1(idx, 4)
    assert torch.allclose(window_weights(pool, 0.0), torch.full((40,), 1 / 40, dtype=torch.float64))
    shares = []
    for balance in (0.0, 0.5, 1.0):
        batch = augmented_batches([pool], [1.0], balance=balance)(torch.Generator().manual_seed(0), 2000)
        shares.append(float((batch[:, 2] > 0).float().mean()))
    assert shares[0] == pytest.approx(0.05, abs=0.01)  # 4 of 40 windows, half their cells
    assert shares[0] < shares[1] < shares[2]
    # balance 1: a rare window weighs 0.5 / 0.95 + 0.5 / 0.05, a plain one 1 / 0.95, so rare
    # windows are 42.1 / 80 of the draws and the rare class half their cells
    assert shares[2] == pytest.approx(0.5 * 4 * (0.5 / 0.95 + 10) / (4 * (0.5 / 0.95 + 10) + 36 / 0.95), abs=0.02)
    with pytest.raises(ConfigError, match="balance"):
        window_weights(pool, -1.0)


def test_a_resumed_run_keeps_the_priors_tuned_inference_settings(tmp_path):
    out = tmp_path / "p"
    kwargs = dict(batch_size=8, unet=TINY, progress=False, train_overrides={"checkpoint_every": 2})
    src = [LabelSource((str(LULC),), 1.0, 12)]
    train_landcover_prior(out, src, "chesapeake", steps=2, **kwargs)
    cfg = json.loads((out / "config.json").read_text())
    assert "infer" not in cfg["meta"]
    cfg["meta"]["infer"] = {"pnp": {"steps": 7}}  # what a tuning benchmark records
    (out / "config.json").write_text(json.dumps(cfg))
    train_landcover_prior(out, src, "chesapeake", steps=4, **kwargs)
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert meta["trained_steps"] == 4 and meta["infer"] == {"pnp": {"steps": 7}}
    # a fresh run (no checkpoint to continue) does not inherit them
    train_landcover_prior(out, src, "chesapeake", steps=2, resume=False, **{**kwargs, "train_overrides": None})
    assert "infer" not in json.loads((out / "config.json").read_text())["meta"]
