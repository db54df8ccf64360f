"""The Dask runner (`segment(..., scheduler=...)`, `geo-ppp segment --scheduler`) on real NAIP / NLCD.

Oracle: a region run serially, on a LocalCluster of 2 worker processes, on that cluster again after a
run that failed part-way, and with a worker killed mid-task, gives byte-identical maps. Most runs use
a PIXEL-WISE inference (fast, and independent of batching and threads); one runs the real method with
a tiny random-weight prior and ``steps=1`` serially (1 torch thread) and on Dask (1 thread per worker).

One LocalCluster (``DaskRunner("local:2")``) serves the whole module; runs reach it through its
address, as they would reach a remote scheduler. The inference callables below are module-level
classes and functions, so the worker processes unpickle them by importing ``tests.test_dask`` (and
``tests.conftest`` for ``pixelwise``).

The tests that start the cluster, or restart and kill its workers, are marked ``dask_cluster``:
``-m "not slow and not dask_cluster"`` leaves them out (a second ``-m`` replaces the default one).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from geo_ppp.cli import main
from geo_ppp.errors import InputError
from geo_ppp.pipeline import segment
from geo_ppp.pipeline.distributed import DaskRunner, PriorPlugin, SchedulerError, parse_scheduler
from geo_ppp.pipeline.plan import plan
from geo_ppp.pipeline.store import TileStore
from tests.conftest import pixelwise, sample_tile  # pixelwise: the pixel-wise model of the tiling oracle

REGION = (1, 2, 3, 7)  # four real NAIP patches (and their real NLCD) as one region: 36 tiles of 128 px
SMALL = (3, 7)  # 18 tiles
KW = {"tile_size": 128, "overlap": 16, "batch_size": 2}
UNREACHABLE = "tcp://127.0.0.1:1"


def _inputs(patches: tuple[int, ...]) -> tuple[list[Path], list[Path]]:
    return [sample_tile("naip", i) for i in patches], [sample_tile("nlcd", i) for i in patches]


# -- inference functions the workers unpickle ---------------------------------------------------------

def _claim(path: Path) -> bool:
    """Create ``path`` atomically; False if it exists (another process got there first)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


class Interrupted(Exception):
    pass


class FailAfter:
    """Pixel-wise for ``n`` batches in all (counted across processes with slot files), then it raises."""

    def __init__(self, folder: Path, n: int) -> None:
        self.folder = Path(folder)
        self.n = n

    def __call__(self, image, valid, weak, seeds, timings) -> np.ndarray:
        if not any(_claim(self.folder / f"slot{i}") for i in range(self.n)):
            raise Interrupted("simulated failure part-way through the run")
        return pixelwise(image, valid, weak, seeds, timings)


class KillOnce:
    """Pixel-wise, but the first call (over all processes) kills its own worker process."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __call__(self, image, valid, weak, seeds, timings) -> np.ndarray:
        if _claim(self.marker):
            os._exit(1)
        return pixelwise(image, valid, weak, seeds, timings)


class Recording:
    """Pixel-wise, and leaves a file per call (to check that nothing ran)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def __call__(self, image, valid, weak, seeds, timings) -> np.ndarray:
        _claim(self.folder / f"call-{os.getpid()}-{seeds[0]}")
        return pixelwise(image, valid, weak, seeds, timings)


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _cluster_tests_are_marked(request: pytest.FixtureRequest) -> None:
    """A test that uses the cluster carries the ``dask_cluster`` marker, so that ``-m`` selects it."""
    if "cluster" in request.fixturenames:
        assert request.node.get_closest_marker("dask_cluster"), f"mark {request.node.name} dask_cluster"


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 single-threaded worker processes for the module."""
    with DaskRunner("local:2") as runner:
        runner.client.wait_for_workers(2, timeout=120)
        yield runner


@pytest.fixture
def address(cluster: DaskRunner) -> str:
    """The cluster's scheduler address, with both workers up (a killed one is restarted by its nanny)."""
    cluster.client.wait_for_workers(2, timeout=120)
    return cluster.client.scheduler.address


@pytest.fixture(scope="module")
def serial_map(tiny_lc_prior: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of the pixel-wise map of REGION, run in this process."""
    folder = tmp_path_factory.mktemp("serial")
    images, weak = _inputs(REGION)
    res = segment(images, weak, out=folder / "OUT.tif", prior=tiny_lc_prior, infer=pixelwise, **KW)
    assert res.stats["tiles"] == res.stats["ran"] == 36
    return (folder / "OUT.tif").read_bytes()


def _scheduler_tasks(runner: DaskRunner, wait_for: list[str] = ()) -> dict[str, dict | None]:
    """The scheduler's task keys and their resource restrictions (once it knows the keys ``wait_for``)."""
    deadline = time.monotonic() + 30
    while True:
        tasks = runner.client.run_on_scheduler(
            lambda dask_scheduler: {str(k): t.resource_restrictions for k, t in dask_scheduler.tasks.items()}
        )
        if set(wait_for) <= set(tasks) or time.monotonic() > deadline:
            return tasks
        time.sleep(0.05)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- 1. the oracle -----------------------------------------------------------------------------------------


@pytest.mark.dask_cluster
def test_dask_map_is_byte_identical_to_serial_also_after_an_interruption(
    tiny_lc_prior: Path, address: str, serial_map: bytes, tmp_path: Path
) -> None:
    images, weak = _inputs(REGION)
    for name in ("b", "c"):
        (tmp_path / name).mkdir()
    # (b) on the cluster
    res = segment(images, weak, out=tmp_path / "b" / "OUT.tif", prior=tiny_lc_prior, infer=pixelwise,
                  scheduler=address, **KW)
    assert res.stats["ran"] == 36
    assert (tmp_path / "b" / "OUT.tif").read_bytes() == serial_map
    assert not (tmp_path / "b" / "OUT.tif.work").exists()

    # (c) a run that fails after 3 batches (6 tiles), then the same run again on its work dir
    out, work = tmp_path / "c" / "OUT.tif", tmp_path / "c-work"
    (tmp_path / "slots").mkdir()
    with pytest.raises(Interrupted):
        segment(images, weak, out=out, workdir=work, prior=tiny_lc_prior,
                infer=FailAfter(tmp_path / "slots", 3), scheduler=address, **KW)
    assert list(out.parent.iterdir()) == []  # no map, no temporary file
    kept = _files(work / "tiles")
    assert all(name.endswith(".npy") and not name.startswith(".") for name in kept)  # no partial tile
    assert len(kept) <= 6
    statuses: list[str] = []
    res = segment(images, weak, out=out, workdir=work, prior=tiny_lc_prior, infer=pixelwise,
                  scheduler=address, progress=lambda done, total, tile, status: statuses.append(status), **KW)
    assert res.stats["resumed"] == 6 and res.stats["ran"] == 30
    assert sorted(statuses) == ["ran"] * 30 + ["resumed"] * 6
    assert out.read_bytes() == serial_map


@pytest.mark.dask_cluster
def test_real_inference_serial_and_on_dask_are_byte_identical(
    tiny_lc_prior: Path, address: str, tmp_path: Path
) -> None:
    images, weak = _inputs(SMALL)
    kw = {"prior": tiny_lc_prior, "steps": 1, "seed": 5, **KW}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every worker (PriorPlugin): torch's sums depend on the thread count
    try:
        serial = segment(images, weak, out=tmp_path / "serial.tif", **kw)
    finally:
        torch.set_num_threads(threads)
    dask = segment(images, weak, out=tmp_path / "dask.tif", scheduler=address, **kw)
    assert serial.stats["ran"] == dask.stats["ran"] == 18
    assert "pnp" in dask.stats["seconds"]  # the real method ran in the workers
    # the region calibration ran as a task and fitted the same model as in this process
    assert dask.config["calibration"]["status"] == "fitted"
    assert dask.config["calibration"]["summary"] == serial.config["calibration"]["summary"]
    assert (tmp_path / "serial.tif").read_bytes() == (tmp_path / "dask.tif").read_bytes()


@pytest.mark.dask_cluster
def test_runs_of_the_same_job_into_other_work_dirs_each_write_their_tiles(
    tiny_lc_prior: Path, address: str, tmp_path: Path
) -> None:
    """Equal jobs but for the work dir, on one client: at once (as `run_job` submits regions), then again."""
    images, weak = _inputs(SMALL)
    jobs = [plan(images, weak, workdir=tmp_path / name, prior=tiny_lc_prior, **KW) for name in "abc"]
    for job in jobs:
        TileStore(job.workdir, job.fingerprint())
    with DaskRunner(address, infer=pixelwise) as runner:
        futures = runner.submit(jobs[0], jobs[0].batches()) + runner.submit(jobs[1], jobs[1].batches())
        runner.client.gather(futures)
        report = runner(jobs[2], jobs[2].batches(), None, {})
    assert set(report.values()) == {"ran"}
    for job in jobs:
        assert len(list(Path(job.workdir, "tiles").glob("*.npy"))) == 18, job.workdir


# -- 2. a worker dies -----------------------------------------------------------------------------------


@pytest.mark.dask_cluster
def test_a_killed_worker_is_survived_with_the_same_map(
    tiny_lc_prior: Path, cluster: DaskRunner, address: str, serial_map: bytes, tmp_path: Path
) -> None:
    images, weak = _inputs(REGION)
    marker = tmp_path / "killed"
    res = segment(images, weak, out=tmp_path / "OUT.tif", prior=tiny_lc_prior, infer=KillOnce(marker),
                  scheduler=address, **KW)
    assert marker.exists()  # a worker process really died in the middle of a task ...
    pid = int(marker.read_text())
    assert pid != os.getpid() and pid not in cluster.client.run(os.getpid).values()  # ... and is gone
    assert res.stats["ran"] == 36
    assert (tmp_path / "OUT.tif").read_bytes() == serial_map


# -- 3. GPU resources ----------------------------------------------------------------------------------


@pytest.mark.dask_cluster
def test_cuda_needs_workers_with_a_gpu_resource(tiny_lc_prior: Path, cluster: DaskRunner, address: str,
                                                tmp_path: Path) -> None:
    images, weak = _inputs(SMALL)
    job = plan(images, weak, workdir=tmp_path / "work", prior=tiny_lc_prior, **KW)
    cuda = dataclasses.replace(job, device="cuda")
    with pytest.raises(SchedulerError, match="GPU=1"):
        cluster.prepare(cuda)
    # through segment: the same error, and nothing ran or was left
    calls = tmp_path / "calls"
    calls.mkdir()
    (tmp_path / "out").mkdir()
    with pytest.raises(SchedulerError, match="GPU=1"):
        segment(images, weak, out=tmp_path / "out" / "OUT.tif", prior=tiny_lc_prior, device="cuda",
                scheduler=address, infer=Recording(calls), **KW)
    assert list(calls.iterdir()) == []
    assert list((tmp_path / "out").iterdir()) == []

    # the tasks of a cuda job ask for one GPU each (and stay pending on CPU workers); a CPU job's for nothing
    TileStore(job.workdir, job.fingerprint())
    with DaskRunner(address, infer=pixelwise) as runner:
        futures = runner.submit(cuda, cuda.batches()[:2]) + runner.submit(job, job.batches()[:1])
        try:
            tasks = _scheduler_tasks(runner, [f.key for f in futures])
            assert [tasks[f.key] for f in futures] == [{"GPU": 1}, {"GPU": 1}, None]
            assert futures[2].result(timeout=60)["report"] == {t.key: "ran" for t in job.batches()[0]}
            assert [f.status for f in futures] == ["pending", "pending", "finished"]
        finally:
            runner.client.cancel(futures, force=True)


# -- 4. bad input ----------------------------------------------------------------------------------------


def test_an_unreachable_scheduler(tiny_lc_prior: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SchedulerError, match="cannot reach") as err:
        DaskRunner(UNREACHABLE, timeout=1)
    assert isinstance(err.value, ConnectionError)
    # the CLI: a clear error, exit code 1, and no map, work dir or temporary file
    monkeypatch.setitem(DaskRunner.__init__.__kwdefaults__, "timeout", 1.0)
    images, weak = _inputs(SMALL)
    out = tmp_path / "out" / "OUT.tif"
    out.parent.mkdir()
    args = [str(p) for p in images] + [arg for w in weak for arg in ("--weak-labels", str(w))]
    res = CliRunner().invoke(main, ["segment", *args, "--out", str(out), "--prior", str(tiny_lc_prior),
                                    "--scheduler", UNREACHABLE, "-q"])
    assert res.exit_code == 1, res.output
    assert "cannot reach the Dask scheduler" in res.output and UNREACHABLE in res.output
    assert "Traceback" not in res.output
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("text", ["local:0", "local:x", "local:-2", "local:"])
def test_a_malformed_local_scheduler(text: str, tiny_lc_prior: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="local:N with N >= 1"):
        parse_scheduler(text)
    with pytest.raises(InputError, match="local:N with N >= 1"):
        DaskRunner(text)
    if text != "local:0":
        return
    images, weak = _inputs(SMALL)
    out = tmp_path / "out" / "OUT.tif"
    out.parent.mkdir()
    res = CliRunner().invoke(main, ["segment", str(images[0]), "--weak-labels", str(weak[0]), "--out",
                                    str(out), "--prior", str(tiny_lc_prior), "--scheduler", text, "-q"])
    assert res.exit_code == 1, res.output
    assert "--scheduler 'local:0'" in res.output
    assert list(out.parent.iterdir()) == []


def test_parse_scheduler() -> None:
    assert parse_scheduler("local") == ("local", None)
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("tcp://10.0.0.1:8786", None)


@pytest.mark.dask_cluster
def test_workers_that_cannot_load_the_prior(cluster: DaskRunner, address: str, make_tiny_lc_prior,
                                            tmp_path: Path) -> None:
    images, weak = _inputs(SMALL)
    folder = make_tiny_lc_prior(tmp_path / "prior")  # a fresh one: this test damages it
    job = plan(images, weak, workdir=tmp_path / "work", prior=folder, **KW)  # the client loads and caches it
    (folder / "model.safetensors").unlink()  # ... but the workers cannot
    assert not (folder / "model.safetensors").exists()
    calls = tmp_path / "calls"
    calls.mkdir()
    out = tmp_path / "out" / "OUT.tif"
    out.parent.mkdir()
    before = set(_scheduler_tasks(cluster))
    with pytest.raises(SchedulerError, match="cannot load the prior") as err:
        segment(images, weak, out=out, prior=folder, infer=Recording(calls), scheduler=address, **KW)
    assert str(folder) in str(err.value)
    assert list(calls.iterdir()) == []  # no batch ran
    assert not any(key.startswith("geo_ppp-") for key in set(_scheduler_tasks(cluster)) - before)
    assert list(out.parent.iterdir()) == []  # no map, no work dir
    # the failed plugin is not left on the scheduler (new workers would try it again)
    name = PriorPlugin(job.prior, job.device).name
    plugins = cluster.client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
    assert name not in plugins
    # the prepare step alone says the same
    with pytest.raises(SchedulerError, match="cannot load the prior"):
        cluster.prepare(job)
    shutil.rmtree(folder)


# -- 5. threads ------------------------------------------------------------------------------------------


@pytest.mark.dask_cluster
def test_workers_run_torch_on_one_thread(tiny_lc_prior: Path, cluster: DaskRunner, address: str,
                                         tmp_path: Path) -> None:
    images, weak = _inputs(SMALL)
    job = plan(images, weak, workdir=tmp_path / "work", prior=tiny_lc_prior, **KW)
    cluster.client.run(torch.set_num_threads, 2)  # as if something had changed it
    assert set(cluster.client.run(torch.get_num_threads).values()) == {2}
    cluster.prepare(job)
    threads = cluster.client.run(torch.get_num_threads)
    assert len(threads) == 2 and set(threads.values()) == {1}  # one per worker thread
    assert cluster.client.submit(torch.get_num_threads, pure=False).result() == 1  # as a task sees it


@pytest.mark.dask_cluster
def test_local_workers_do_not_sample_stacks(cluster: DaskRunner) -> None:
    """The statistical profiler (GIL every 10 ms) is off in the LocalClusters geo_ppp starts.

    Also in workers restarted by their nanny (as after a crash).
    """
    first = sorted(cluster.client.scheduler_info()["workers"])[0]
    cluster.client.restart_workers([first])
    cluster.client.wait_for_workers(2, timeout=120)
    enabled = cluster.client.run(lambda: dask.config.get("distributed.worker.profile.enabled"))
    assert len(enabled) == 2 and set(enabled.values()) == {False}
    assert dask.config.get("distributed.worker.profile.enabled") is True  # the client's config is untouched


# -- 6. progress -----------------------------------------------------------------------------------------


@pytest.mark.dask_cluster
def test_progress_is_called_once_per_tile(tiny_lc_prior: Path, address: str, tmp_path: Path) -> None:
    images, weak = _inputs(SMALL)
    calls: list[tuple[int, int, str, str]] = []
    res = segment(images, weak, out=tmp_path / "OUT.tif", prior=tiny_lc_prior, infer=pixelwise,
                  scheduler=address,
                  progress=lambda done, total, tile, status: calls.append((done, total, tile.key, status)),
                  **KW)
    job = plan(images, weak, workdir=tmp_path / "w", prior=tiny_lc_prior, **KW)
    assert len(calls) == len(job.tiles) == res.stats["tiles"] == 18
    assert [c[0] for c in calls] == list(range(1, 19))
    assert {c[1] for c in calls} == {18}
    assert sorted(c[2] for c in calls) == sorted(t.key for t in job.tiles.tiles)
    assert {c[3] for c in calls} == {"ran"}


@pytest.mark.dask_cluster
def test_distill_serial_on_dask_and_resumed_are_byte_identical(
    tiny_lc_prior: Path, address: str, tmp_path: Path
) -> None:
    """--method distill on a cluster: teacher tiles as tasks, one training task, then the mapped tiles."""
    images, weak = _inputs(SMALL)
    kw = {"prior": tiny_lc_prior, "steps": 1, "seed": 5, "method": "distill", "train_steps": 20,
          "distill_tiles": 3, **KW}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every worker: torch's sums depend on the thread count
    try:
        serial = segment(images, weak, out=tmp_path / "serial.tif", **kw)
    finally:
        torch.set_num_threads(threads)
    work = tmp_path / "work"
    dask = segment(images, weak, out=tmp_path / "dask.tif", scheduler=address, workdir=work, **kw)
    assert serial.stats["ran"] == dask.stats["ran"] == 18
    assert len(list((work / "teacher" / "tiles").glob("*.npy"))) == 3  # the sample, not the region
    assert (tmp_path / "serial.tif").read_bytes() == (tmp_path / "dask.tif").read_bytes()
    # resumed on the cluster: the teacher tiles, the segmenter and the mapped tiles are all reused
    trained = (work / "segmenter" / "model.safetensors").stat().st_mtime_ns
    again = segment(images, weak, out=tmp_path / "dask.tif", scheduler=address, workdir=work, overwrite=True, **kw)
    assert again.stats["resumed"] == 18
    assert (work / "segmenter" / "model.safetensors").stat().st_mtime_ns == trained
    assert (tmp_path / "serial.tif").read_bytes() == (tmp_path / "dask.tif").read_bytes()


@pytest.mark.dask_cluster
def test_a_batch_job_with_distill_runs_on_the_cluster_like_in_process(
    tiny_lc_prior: Path, address: str, tmp_path: Path
) -> None:
    """`geo-ppp run` with a region-level method: teacher tasks, one training task, mapped tiles."""
    from geo_ppp.pipeline.jobs import run_job

    images, weak = _inputs(SMALL)
    spec = tmp_path / "job.toml"
    spec.write_text(
        "[job]\nworkdir = \"work\"\n[defaults]\n"
        f'prior = "{tiny_lc_prior}"\ntile_size = 128\noverlap = 16\nbatch_size = 2\nsteps = 1\nseed = 5\n'
        'method = "distill"\ntrain_steps = 20\ndistill_tiles = 3\n'
        f'[[region]]\nname = "r"\nimage = {json_list(images)}\nweak_labels = {json_list(weak)}\nout = "r.tif"\n'
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every worker
    try:
        segment(images, weak, out=tmp_path / "serial.tif", prior=tiny_lc_prior, steps=1, seed=5, method="distill",
                train_steps=20, distill_tiles=3, **KW)
    finally:
        torch.set_num_threads(threads)
    results = run_job(spec, scheduler=address, echo=lambda s: None)
    assert results[0].stats["ran"] == 18
    assert len(list((tmp_path / "work" / "r" / "teacher" / "tiles").glob("*.npy"))) == 3
    assert (tmp_path / "r.tif").read_bytes() == (tmp_path / "serial.tif").read_bytes()


def json_list(paths: list[Path]) -> str:
    """A TOML array of path strings."""
    return "[" + ", ".join(f'"{p}"' for p in paths) + "]"
