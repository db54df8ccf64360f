"""Colour clustering (local GMM) and the land-cover constraints (LocalKL, LocalMutualInformation)."""

import pytest
import torch

from geo_ppp.errors import ConfigError, ConstraintError, ShapeError
from geo_ppp.landcover.clustering import ClusterConfig, box_mean, image_features, local_gmm
from geo_ppp.landcover.constraints import LocalKL, LocalMutualInformation, Relaxation
from tests.conftest import NAIP

FAST = ClusterConfig(clusters=2, radius=3, iterations=5, warmup_radius=6, warmup_iterations=2)


def _two_colour(noise=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.empty(1, 3, 32, 32)
    img[..., :16] = torch.tensor([40.0, 120.0, 30.0]).view(1, 3, 1, 1)
    img[..., 16:] = torch.tensor([200.0, 190.0, 180.0]).view(1, 3, 1, 1)
    return (img + noise * torch.randn(img.shape, generator=g)).clamp(0, 255)


# ------------------------------------------------------------------------------------------ clustering


def test_box_mean_and_features():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    assert torch.equal(box_mean(x, 0), x)
    out = box_mean(x, 1)
    assert out[0, 0, 2, 2] == x[0, 0, 1:4, 1:4].mean()
    assert out[0, 0, 0, 0] == x[0, 0, :2, :2].mean()  # windows are cut at the edges, not zero-padded
    img = torch.tensor([100.0, 0.0, 0.0, 200.0]).view(1, 4, 1, 1)
    feat = image_features(img)
    assert feat.shape == (1, 5, 1, 1)
    assert feat[0, 4, 0, 0].item() == pytest.approx((200 - 100) / 300)  # NDVI
    assert image_features(img[:, :3]).shape == (1, 3, 1, 1)  # no NIR, no NDVI
    assert torch.isfinite(image_features(torch.zeros(1, 4, 3, 3))).all()  # NDVI guarded at 0/0


def test_local_gmm_separates_two_colours():
    r = local_gmm(image_features(_two_colour()), FAST)
    assert r.shape == (1, 2, 32, 32)
    assert torch.allclose(r.sum(1), torch.ones(1, 32, 32), atol=1e-5)
    labels = r.argmax(1)[0]
    left, right = labels[:, :16], labels[:, 16:]
    assert left.unique().numel() == 1 and right.unique().numel() == 1
    assert left[0, 0] != right[0, 0]
    assert r.max(1).values.min() > 0.9  # confident everywhere


@pytest.mark.parametrize("channels", [3, 4])
def test_local_gmm_constant_image_is_finite(channels):
    cfg = ClusterConfig(clusters=5, radius=2, iterations=3, warmup_radius=4, warmup_iterations=1)
    for value in (0.0, 77.0):
        r = local_gmm(image_features(torch.full((2, channels, 24, 24), value)), cfg)
        assert torch.isfinite(r).all()
        assert torch.allclose(r.sum(1), torch.ones(2, 24, 24), atol=1e-5)


def test_local_gmm_mostly_invalid_mask():
    img = _two_colour()
    valid = torch.zeros(1, 1, 32, 32)
    valid[..., :2, :2] = 1.0
    r = local_gmm(image_features(img), FAST, valid=valid)
    assert torch.isfinite(r).all()
    assert torch.allclose(r.sum(1), torch.ones(1, 32, 32), atol=1e-5)
    assert torch.allclose(r[0, :, 20, 20], torch.full((2,), 0.5))  # invalid pixels: uniform
    # no valid pixel at all
    r = local_gmm(image_features(img), FAST, valid=torch.zeros(1, 1, 32, 32))
    assert torch.isfinite(r).all() and torch.allclose(r, torch.full_like(r, 0.5))


def test_local_gmm_on_real_tile():
    from geo_ppp.io import read_image

    data, valid, _ = read_image(NAIP)
    img = torch.from_numpy(data)[None, :, ::4, ::4].contiguous()  # 64x64, like 4 m
    cfg = ClusterConfig(clusters=4, radius=3, iterations=4, warmup_radius=6, warmup_iterations=2)
    r = local_gmm(image_features(img), cfg)
    assert r.shape == (1, 4, 64, 64) and torch.isfinite(r).all()
    assert torch.allclose(r.sum(1), torch.ones(1, 64, 64), atol=1e-5)
    assert r.argmax(1).unique().numel() >= 2


def test_cluster_config_round_trip_and_strict():
    cfg = ClusterConfig(clusters=3)
    assert ClusterConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        ClusterConfig.from_dict({"clusterz": 3})


# ----------------------------------------------------------------------------------------- relaxation


@pytest.mark.parametrize("kind", Relaxation.kinds)
def test_relaxation_sums_to_one(kind):
    relax = Relaxation(kind)
    x = 3 * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for progress in (0.0, 0.5, 1.0):
        relax.on_step(progress)
        s = relax(x)
        assert s.shape == x.shape and (s >= 0).all()
        assert torch.allclose(s.sum(1), torch.ones(2, 8, 8), atol=1e-5)
    # a one-hot latent in [-1, 1] relaxes to (nearly) that one-hot map
    onehot = -torch.ones(1, 4, 2, 2)
    onehot[:, 2] = 1.0
    assert (relax(onehot)[:, 2] > 0.99).all()


def test_relaxation_anneals_and_validates():
    relax = Relaxation("softmax", start=0.4, end=0.04)
    relax.on_step(0.5)
    assert relax.scale == pytest.approx(0.4 * 0.1**0.5)
    relax.on_step(2.0)
    assert relax.scale == pytest.approx(0.04)
    with pytest.raises(ConstraintError, match="unknown"):
        Relaxation("sigmoid")
    with pytest.raises(ConstraintError, match="> 0"):
        Relaxation("softmax", start=0.0)


# ---------------------------------------------------------------------------------------- constraints
# The contract every constraint obeys (LocalKL with either relaxation, including the sharpest interval,
# and LocalMutualInformation with each) is checked for all of them at once in test_constraints.py.

WEAK = torch.tensor([0.1, 0.6, 0.25, 0.05])


def _stripes(b=1, size=32, width=2):
    on = ((torch.arange(size) // width) % 2 == 0).float().view(1, 1, size).expand(b, size, size)
    return torch.stack([on, 1 - on], 1)


def test_local_kl_zero_at_the_weak_distribution():
    weak = WEAK.view(1, 4, 1, 1).expand(2, 4, 16, 16).clone()
    relax = Relaxation("softmax")
    kl = LocalKL(weak, relax, radius=3)
    x = relax.scale * weak.log()  # softmax(x / scale) == weak
    assert torch.allclose(kl(x), torch.zeros(2), atol=1e-5)
    x_other = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    assert (kl(x_other) > 0.05).all()  # the contract (shapes, gradients, ...): test_constraints.py
    kl.on_step(0.5)  # half-way through the annealing
    # a latent that puts everything on the weak's most likely class is better than one on its least
    best, worst = -torch.ones(2, 4, 16, 16), -torch.ones(2, 4, 16, 16)
    best[:, 1], worst[:, 3] = 1.0, 1.0
    assert (kl(best) < kl(worst)).all()


def test_local_kl_is_per_sample_and_uses_the_mask():
    weak = torch.stack([WEAK, WEAK.flip(0)]).view(2, 4, 1, 1).expand(2, 4, 8, 8).clone()
    relax = Relaxation("softmax")
    x = relax.scale * weak.log()
    x[1] = x[0]  # sample 1 gets sample 0's field: only its loss grows
    loss = LocalKL(weak, relax, radius=2)(x)
    assert loss[0].abs() < 1e-5 and loss[1] > 0.1
    # mask out sample 1's pixels except one corner: the loss is averaged over valid pixels only
    valid = torch.ones(2, 1, 8, 8)
    valid[1] = 0.0
    masked = LocalKL(weak, relax, radius=2, valid=valid)(x)
    assert masked[1] == 0.0 and masked[0].abs() < 1e-5


@pytest.mark.parametrize("kind", Relaxation.kinds)
def test_local_mi_prefers_a_segmentation_aligned_with_the_clusters(kind):
    clusters = _stripes(b=2)
    lmi = LocalMutualInformation(clusters, Relaxation(kind), radius=3)
    aligned = -torch.ones(2, 4, 32, 32)
    aligned[:, 0] = clusters[:, 0] * 2 - 1
    aligned[:, 2] = clusters[:, 1] * 2 - 1  # class labels are arbitrary: any one-to-one match is aligned
    g = torch.Generator().manual_seed(0)
    random = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 32, 32), generator=g), 4)
    random = random.permute(0, 3, 1, 2).float() * 2 - 1
    good, bad = lmi(aligned), lmi(random)
    assert (good < bad - 0.2).all()
    assert (good >= -0.5 - 1e-4).all() and (bad <= 1e-6).all()  # -NMI lies in [-0.5, 0]


@pytest.mark.parametrize("make", ["kl", "mi"])
def test_mismatched_evidence_raises_shape_error(make):
    evidence = torch.softmax(torch.randn(2, 4, 16, 16), 1)
    c = LocalKL(evidence, Relaxation()) if make == "kl" else LocalMutualInformation(evidence, Relaxation())
    assert c(torch.randn(2, 4, 16, 16)).shape == (2,)
    for bad in (torch.randn(3, 4, 16, 16), torch.randn(2, 4, 16, 12), torch.randn(2, 4, 16)):
        with pytest.raises(ShapeError, match="does not match its evidence|batch shaped"):
            c(bad)
    if make == "kl":  # the latent must have as many classes as the weak distribution
        with pytest.raises(ShapeError, match="number of classes"):
            c(torch.randn(2, 3, 16, 16))
    else:  # the segmentation's K and the cluster count J are independent
        assert c(torch.randn(2, 3, 16, 16)).shape == (2,)
