"""The TSP application: labels, renderer, decoder, 2-opt, parsers, the pnp decode hook, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_ppp.cli import main
from geo_ppp.core.pnp import PnPConfig, plug_and_play
from geo_ppp.errors import ConfigError, InputError
from geo_ppp.tsp.baselines import farthest_insertion, nearest_neighbour
from geo_ppp.tsp.decode import greedy_tours, two_opt, two_opt_reference
from geo_ppp.tsp.files import read_problems
from geo_ppp.tsp.instances import (
    check_coords,
    held_karp,
    label_fast_tsp,
    random_instances,
    tour_length,
    tour_lengths,
)
from geo_ppp.tsp.prior import labelled_instances, symmetric_batches, train_tsp_prior
from geo_ppp.tsp.render import EDGE_VALUE, edge_images, render_tours, to_pixels
from geo_ppp.tsp.solve import RELAXATIONS, SolveConfig, relax, solve_tsp


def _is_perm(t, n):
    return sorted(np.asarray(t).tolist()) == list(range(n))


# --- labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 7, 9])
def test_fast_tsp_labels_match_the_exact_solver(n):
    for seed in range(3):
        c = random_instances(1, n, seed)[0]
        exact, _ = held_karp(c)
        found = tour_length(c, label_fast_tsp(c))
        assert found == pytest.approx(exact, rel=1e-6)


def test_held_karp_matches_brute_force():
    import itertools

    c = random_instances(1, 7, 11)[0]
    brute = min(tour_length(c, np.array([0, *p])) for p in itertools.permutations(range(1, 7)))
    length, tour = held_karp(c)
    assert length == pytest.approx(brute) and tour_length(c, tour) == pytest.approx(brute)


def test_label_cache_is_reused(tmp_path, monkeypatch):
    c1, t1 = labelled_instances(6, 5, 0, tmp_path)
    import geo_ppp.tsp.prior as prior_module

    monkeypatch.setattr(prior_module, "label_fast_tsp", lambda c: pytest.fail("relabelled a cached chunk"))
    c2, t2 = labelled_instances(6, 5, 0, tmp_path)
    assert np.array_equal(c1, c2) and np.array_equal(t1, t2) and c1.shape == (5, 6, 2)


# --- renderer -------------------------------------------------------------------------------------


def test_render_values_follow_the_paper_encoding():
    c = torch.tensor([[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]])
    x = render_tours(c, torch.arange(4)[None])
    assert x.shape == (1, 1, 64, 64) and x.min() == -1 and x.max() == 1
    px = to_pixels(c[0]).round().long()
    for col, row in px.tolist():
        assert x[0, 0, row, col] == 1.0  # node dots
    mid = to_pixels(torch.tensor([0.5, 0.1])).round().long().tolist()
    assert x[0, 0, mid[1], mid[0]] == pytest.approx(2 * EDGE_VALUE - 1)  # an edge pixel
    assert x[0, 0, 32, 32] == -1.0  # background


def test_sparse_renderer_equals_dense_and_is_differentiable():
    c = torch.rand(3, 12, 2, generator=torch.Generator().manual_seed(0))
    tours = torch.stack([torch.randperm(12, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    edges = torch.stack([tours, tours.roll(-1, 1)], -1)
    images = edge_images(c, edges)
    from geo_ppp.tsp.render import _pixel_grid, _segment_profile, compose, node_layer

    px = to_pixels(c)
    a = torch.gather(px, 1, edges[..., :1].expand(-1, -1, 2))
    b = torch.gather(px, 1, edges[..., 1:].expand(-1, -1, 2))
    dense = compose(node_layer(c), _segment_profile(a, b, _pixel_grid(64, c.device)).sum(1))
    assert torch.allclose(images.render(torch.ones(3, 12)), dense, atol=1e-6)
    assert torch.allclose(render_tours(c, tours), dense, atol=1e-6)
    w = torch.full((3, 12), 0.3, requires_grad=True)
    images.render(w).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_symmetries_keep_the_tour_images_valid():
    c = torch.rand(1, 10, 2, generator=torch.Generator().manual_seed(1))
    x = render_tours(c, torch.arange(10)[None])
    batch = symmetric_batches(x.half())(torch.Generator().manual_seed(0), 64)
    flipped = render_tours(torch.stack([1 - c[0, :, 0], c[0, :, 1]], -1)[None], torch.arange(10)[None])
    transposed = render_tours(c.flip(-1), torch.arange(10)[None])
    candidates = [x, flipped, transposed]
    assert any(
        torch.allclose(b.float(), cand[0].half().float(), atol=1e-3) for b in batch for cand in candidates
    )
    for b in batch:  # each is one of the 8 images of the square's symmetry group: same value histogram
        assert torch.equal(b.flatten().sort().values, x.half().float().flatten().sort().values)


# --- decoding -------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 30), seed=st.integers(0, 10_000), kind=st.sampled_from(["random", "zeros", "spiky"]))
def test_greedy_decoder_always_gives_a_permutation(n, seed, kind):
    rng = np.random.default_rng(seed)
    c = rng.random((2, n, 2))
    a = {
        "random": rng.random((2, n, n)),
        "zeros": np.zeros((2, n, n)),
        "spiky": (rng.random((2, n, n)) > 0.9) * 1e6,
    }[kind]
    tours = greedy_tours(c, a)
    assert all(_is_perm(t, n) for t in tours)
    improved = two_opt(c, tours)
    assert all(_is_perm(t, n) for t in improved)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 25), seed=st.integers(0, 10_000))
def test_two_opt_never_lengthens_and_matches_the_reference(n, seed):
    rng = np.random.default_rng(seed)
    c = rng.random((3, n, 2))
    start = np.stack([rng.permutation(n) for _ in range(3)])
    out = two_opt(c, start)
    assert (tour_lengths(c, out) <= tour_lengths(c, start) + 1e-12).all()
    for k in range(3):
        assert np.array_equal(out[k], two_opt_reference(c[k], start[k]))


def test_baselines_are_permutations_and_ordered_as_expected():
    c = random_instances(32, 30, 3)
    nn, fi = nearest_neighbour(c), farthest_insertion(c)
    assert all(_is_perm(t, 30) for t in np.concatenate([nn, fi]))
    assert tour_lengths(c, fi).mean() < tour_lengths(c, nn).mean()


# --- the pnp decode hook and the solver -----------------------------------------------------------


def _tiny_prior(tmp_path):
    out = tmp_path / "tsp_prior"
    train_tsp_prior(
        out,
        nodes=8,
        instances=16,
        steps=2,
        batch_size=4,
        progress=False,
        unet={"base_channels": 8, "channel_mult": (1, 2), "attention_levels": ()},
        workdir=tmp_path / "work",
    )
    return out


def test_plug_and_play_optimises_a_latent_through_decode():
    from geo_ppp.core.denoisers import UNetDenoiser
    from geo_ppp.core.schedules import NoiseSchedule
    from geo_ppp.core.unet import UNetConfig

    torch.manual_seed(0)
    den = UNetDenoiser(UNetConfig(base_channels=8, channel_mult=(1, 2)))
    torch.nn.init.normal_(den.net.head[-1].weight)  # a fresh U-Net predicts 0: no gradient at all
    z0 = torch.zeros(2, 5)
    decode = lambda z: torch.tanh(z).sum(1).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)
    z = plug_and_play(
        den, NoiseSchedule.create(), x_init=z0, decode=decode, config=PnPConfig(steps=3), seed=[0, 1]
    )
    assert z.shape == (2, 5) and not torch.equal(z, z0)
    with pytest.raises(ConfigError):
        plug_and_play(den, NoiseSchedule.create(), (1, 8, 8), decode=decode)


@pytest.mark.parametrize("relaxation", sorted(RELAXATIONS))
def test_relaxations_give_rows_that_sum_to_one(relaxation):
    c = torch.rand(2, 9, 2)
    from geo_ppp.tsp.solve import neighbours

    nbr = neighbours(c, 8)
    a = relax(torch.randn(2, 9, 8), nbr, relaxation)
    assert torch.allclose(a.sum(-1), torch.ones(2, 9), atol=1e-4)
    assert torch.all(a.diagonal(dim1=1, dim2=2) == 0)


@pytest.mark.parametrize("n", [6, 20, 120])
def test_solver_with_a_prior_gives_permutations_for_any_size(tmp_path, n):
    from geo_ppp.core.weights import load_prior

    prior = load_prior(_tiny_prior(tmp_path))
    c = random_instances(3, n, n)
    tours = solve_tsp(c, prior, SolveConfig(steps=2, batch_size=2))
    assert tours.shape == (3, n) and all(_is_perm(t, n) for t in tours)


def test_solver_results_do_not_depend_on_the_batching(tmp_path):
    from geo_ppp.core.weights import load_prior

    prior = load_prior(_tiny_prior(tmp_path))
    c = random_instances(4, 10, 0)
    a = solve_tsp(c, prior, SolveConfig(steps=3, batch_size=4, two_opt=False), seed=5)
    b = solve_tsp(c, prior, SolveConfig(steps=3, batch_size=1, two_opt=False), seed=5)
    assert np.array_equal(a, b)


# --- files and the CLI ----------------------------------------------------------------------------


def _write_instances(path, num=3, n=8, reference=True):
    lines = []
    for x in random_instances(num, n, 7):
        line = " ".join(f"{v:.6f}" for v in x.ravel())
        if reference:
            t = label_fast_tsp(x)
            line += " output " + " ".join(str(v + 1) for v in [*t, t[0]])
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("0 0 1 1 0 1\n", "line 1|:1: 3 node"),
        ("0 0 1 1 0 1 0 0\n", ":1: nodes 1 and 4 share"),
        ("0 0 1 1\n0 0 1 1 0 1 1 0 nan 2\n", ":1: 2 node"),
        ("0 0 1 1 0 1 1 0 0.5 nan\n", ":1: node 5 has a non-finite"),
        ("0 0 1 1 0 1 1 0 output 1 2 2 4 1\n", ":1: the reference tour: not a permutation"),
        ("0 0 1 1 0 1 1 0 output 1 2 1\n", ":1: the reference tour has 3 entries"),
        ("0 0 1 1 0 1 1\n", ":1: an odd count"),
    ],
)
def test_bad_text_input_names_the_line_and_the_fix(tmp_path, text, expect):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=expect.split("|")[-1]):
        read_problems([path])


def test_tsplib_metrics_and_unsupported_types(tmp_path):
    body = "NODE_COORD_SECTION\n1 0 0\n2 3 0\n3 3 4\n4 0 4\nEOF\n"
    for metric, length in [("EUC_2D", 14), ("CEIL_2D", 14), ("ATT", 6)]:
        path = tmp_path / f"sq_{metric}.tsp"
        path.write_text(f"NAME : sq\nTYPE : TSP\nDIMENSION : 4\nEDGE_WEIGHT_TYPE : {metric}\n{body}")
        (p,) = read_problems([path])
        assert p.length(np.arange(4)) == length
        assert p.coords.max() == pytest.approx(1.0) and p.coords[:, 0].max() == pytest.approx(0.75)
    bad = tmp_path / "geo.tsp"
    bad.write_text(f"NAME : g\nTYPE : TSP\nEDGE_WEIGHT_TYPE : GEO\n{body}")
    with pytest.raises(InputError, match=r"geo.tsp:3: EDGE_WEIGHT_TYPE GEO is not supported"):
        read_problems([bad])
    check_coords(np.random.rand(4, 2))


def test_cli_solve_no_prior_end_to_end(tmp_path):
    inst = _write_instances(tmp_path / "inst.txt")
    out = tmp_path / "tours.txt"
    res = CliRunner().invoke(main, ["tsp", "solve", str(inst), "--out", str(out), "--no-prior", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["instances"] == 3 and summary["gap"] >= -1e-9
    rows = [list(map(int, ln.split())) for ln in out.read_text().splitlines()]
    assert all(r[0] == r[-1] and sorted(r[:-1]) == list(range(1, 9)) for r in rows)
    again = CliRunner().invoke(main, ["tsp", "solve", str(inst), "--out", str(out), "--no-prior"])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_cli_solve_with_a_tiny_prior_and_render(tmp_path):
    prior = _tiny_prior(tmp_path)
    inst = _write_instances(tmp_path / "inst.txt", num=2, n=6, reference=False)
    out = tmp_path / "tours.txt"
    res = CliRunner().invoke(
        main, ["tsp", "solve", str(inst), "--out", str(out), "--prior", str(prior), "--steps", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "solved 2 instance(s) of 6 nodes" in res.output
    png = tmp_path / "r.png"
    res = CliRunner().invoke(
        main, ["tsp", "render", str(inst), "--tours", str(out), "--out", str(png), "--size", "32"]
    )
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_input_writes_nothing(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0 1 1 0 1\n")
    out = tmp_path / "tours.txt"
    res = CliRunner().invoke(main, ["tsp", "solve", str(bad), "--out", str(out), "--no-prior"])
    assert res.exit_code == 1 and "bad.txt:1" in res.output and "at least 4 nodes" in res.output
    assert not out.exists()


def test_a_file_mixing_sizes_is_solved_size_by_size(tmp_path):
    a = _write_instances(tmp_path / "a.txt", num=2, n=6).read_text()
    b = _write_instances(tmp_path / "b.txt", num=2, n=9).read_text().splitlines()
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(b[0] + "\n" + a + b[1] + "\n")
    out = tmp_path / "tours.txt"
    res = CliRunner().invoke(main, ["tsp", "solve", str(mixed), "--out", str(out), "--no-prior", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["sizes"] == [6, 9]
    sizes = [len(ln.split()) - 1 for ln in out.read_text().splitlines()]
    assert sizes == [9, 6, 6, 9]


def test_tsplib_dimension_must_match(tmp_path):
    path = tmp_path / "d.tsp"
    path.write_text(
        "NAME : d\nTYPE : TSP\nDIMENSION : 5\nEDGE_WEIGHT_TYPE : EUC_2D\nNODE_COORD_SECTION\n"
        "1 0 0\n2 3 0\n3 3 4\n4 0 4\nEOF\n"
    )
    with pytest.raises(InputError, match=r"d.tsp:3: DIMENSION 5 but 4 node lines"):
        read_problems([path])


@pytest.mark.gpu
def test_solver_on_cuda_gives_permutations(tmp_path):
    from geo_ppp.core.weights import load_prior

    prior = load_prior(_tiny_prior(tmp_path), device="cuda")
    c = random_instances(4, 30, 2)
    tours = solve_tsp(c, prior, SolveConfig(steps=4, batch_size=4), device="cuda")
    assert all(_is_perm(t, 30) for t in tours)
    cpu = two_opt(c, tours)
    assert np.array_equal(two_opt(c, tours, device="cuda"), cpu)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--instances", str(10**12)], "--instances 1000000000000 needs about"),
        (["--nodes", "5000"], "--nodes"),
        (["--nodes", "3"], "--nodes"),
        (["--instances", "0"], "--instances"),
    ],
)
def test_tsp_training_sizes_are_refused_before_any_work(tmp_path, args, said):
    out = tmp_path / "p"
    res = CliRunner().invoke(main, ["train-prior", "--dataset", "tsp", "--out", str(out), "--steps", "2", *args])
    assert res.exit_code != 0 and said in res.output, res.output
    assert "bug in geo_ppp" not in res.output and not out.exists()
    with pytest.raises(ConfigError, match="needs about"):
        train_tsp_prior(out, instances=10**12, progress=False)
    assert not out.exists()
