"""Run a region's tiles on a dask.distributed cluster (a LocalCluster or an existing scheduler).

Each task carries a small picklable spec (the :class:`~geo_ppp.pipeline.job.RegionJob` and one
batch of tiles; never open datasets or tensors) and writes its tiles atomically into the shared
work dir, so a task that dies is simply retried elsewhere and a rerun recomputes nothing finished.
The prior is loaded once per worker process by :class:`PriorPlugin` and kept in a per-process
cache. On CPU workers torch uses the worker's own thread count (no oversubscription); with
``device="cuda"`` each task asks for the ``GPU`` resource, so a GPU runs one batch at a time.

Example:
    >>> from geo_ppp.pipeline import segment
    >>> from geo_ppp.pipeline.distributed import DaskRunner
    >>> with DaskRunner("local:2") as runner:  # doctest: +SKIP
    ...     segment("naip.tif", "nlcd.tif", "chesapeake", "map.tif", runner=runner)
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dask
import numpy as np

from geo_ppp.errors import GeoPPPError, InputError
from geo_ppp.pipeline.job import Progress, RegionJob
from geo_ppp.pipeline.tiling import Tile
from geo_ppp.pipeline.worker import cached_prior, run_batch

__all__ = ["DaskRunner", "PriorPlugin", "SchedulerError", "parse_scheduler"]

log = logging.getLogger(__name__)


class SchedulerError(GeoPPPError, ConnectionError):
    """The Dask scheduler cannot be reached, or its workers cannot run the job."""


def parse_scheduler(text: str) -> tuple[str, int | None]:
    """``local``, ``local:N`` or an address -> (``local`` | address, N or None).

    Raises:
        InputError: a malformed ``local:N``.
    """
    if text == "local" or text.startswith("local:"):
        if text == "local":
            return "local", None
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"--scheduler {text!r}: give local, local:N with N >= 1, or a scheduler address")
        return "local", n
    if not re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://[^\s/:]+(:\d{1,5})?/?|[^\s/:]+:\d{1,5}", text):
        raise InputError(
            f"--scheduler {text!r} is not a scheduler address; give local, local:N, or an address such as "
            "tcp://HOST:8786 (what `dask scheduler` prints)"
        )
    return text, None


#: dask's config key for the environment of worker processes, set before they start
WORKER_ENV_KEY = "distributed.nanny.pre-spawn-environ"
#: glibc settings for worker processes. Dask sets MALLOC_TRIM_THRESHOLD_ (64 kB) for its workers,
#: and setting it switches off glibc's adaptive mmap threshold: every tensor above 128 kB is then
#: mmap-ed and unmapped again, and torch frees and re-allocates tensors of tens of MB at every step,
#: so each step page-faults its memory back in. Measured: tiles 1.5-1.8x slower than in the client
#: process. A fixed 32 MB mmap threshold (and a 256 MB trim threshold) keeps that memory in the heap.
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": 256 * 2**20, "MALLOC_MMAP_THRESHOLD_": 32 * 2**20}


#: Dask config of the LocalClusters geo_ppp starts. The workers' statistical profiler samples every
#: thread's stack every 10 ms, taking the GIL from the task's Python loop: measured on this 2-core
#: machine, the plug-and-play loop ran 42.5 s in a worker with it against 35.9 s without (serial: 33-38 s).
#: The dashboard's profile page stays empty; everything else on it works.
LOCAL_CLUSTER_CONFIG = {"distributed.worker.profile.enabled": False}


def worker_environ() -> dict[str, object]:
    """Dask's worker environment with the glibc settings above (threads stay at 1 per worker)."""
    env = dict(dask.config.get(WORKER_ENV_KEY, {}) or {})
    env.update(MALLOC_ENV)
    return env


def _set_threads(nthreads: int) -> None:
    import torch

    torch.set_num_threads(max(1, nthreads))


try:  # distributed is a dependency, but keep the import error readable
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover
    WorkerPlugin = object  # type: ignore[assignment,misc]


class PriorPlugin(WorkerPlugin):
    """Loads a prior once in every worker process (and sets torch's threads to the worker's).

    A worker that cannot load the prior fails the plugin's setup, which the client reports before
    any task is submitted.
    """

    def __init__(self, prior: str, device: str = "cpu") -> None:
        self.prior = prior
        self.device = device
        self.name = f"geo_ppp-prior-{hashlib.sha1(f'{prior}|{device}'.encode()).hexdigest()[:10]}"

    def setup(self, worker: Any) -> None:  # noqa: D102
        if self.device == "cpu":
            _set_threads(getattr(worker.state, "nthreads", None) or getattr(worker, "nthreads", 1) or 1)
        try:
            if self.prior:  # (a saved segmenter's job has no prior)
                cached_prior(self.prior, self.device)
        except Exception as exc:
            raise SchedulerError(
                f"worker {worker.address} cannot load the prior {self.prior!r}: {exc}. Give a --prior that "
                "every worker can read (a shipped name, or a folder on a shared file system)"
            ) from exc


def _run_batch_task(
    job: RegionJob, batch: list[Tile], infer: Callable[..., np.ndarray] | None
) -> dict[str, Any]:
    """The task: run one batch in this worker; returns each tile's status and the stage seconds."""
    timings: dict[str, float] = {}
    report = run_batch(job, batch, infer=infer, timings=timings)
    return {"report": report, "timings": timings}


class DaskRunner:
    """A ``runner`` for :func:`geo_ppp.pipeline.segment` that submits batches to Dask.

    Args:
        scheduler: ``local``, ``local:N`` (a LocalCluster of N single-threaded worker processes)
            or a scheduler address (``tcp://host:8786``).
        infer: replaces the land-cover inference in the tasks (tests, benchmarks); must pickle.
        timeout: seconds to wait for the scheduler.
        retries: extra attempts per task on errors raised by the task itself (a dying worker is
            handled by the scheduler, which reschedules its tasks).

    Raises:
        SchedulerError: the scheduler cannot be reached.
    """

    def __init__(
        self,
        scheduler: str = "local",
        *,
        infer: Callable[..., np.ndarray] | None = None,
        timeout: float = 10.0,
        retries: int = 1,
    ) -> None:
        from distributed import Client, LocalCluster

        self.infer = infer
        self.retries = retries
        self._shown = False
        self.cluster = None
        where, n = parse_scheduler(scheduler)
        if not logging.getLogger("geo_ppp").isEnabledFor(logging.DEBUG):
            # the in-process scheduler of a LocalCluster logs every start and stop at INFO
            logging.getLogger("distributed").setLevel(logging.ERROR)
        try:
            if where == "local":
                n = n or max(1, (os.cpu_count() or 1))
                # on a GPU machine every local worker may run CUDA tasks: one GPU slot each, so with
                # local:N and one GPU, up to N batches share it (use local:1 to serialise them)
                import torch

                gpu = {"GPU": 1} if torch.cuda.is_available() else None
                with dask.config.set({WORKER_ENV_KEY: worker_environ(), **LOCAL_CLUSTER_CONFIG}):
                    # a deep copy for the nannies: they keep a shallow merge of the global config,
                    # whose nested dicts this context restores on exit, so a worker restarted later
                    # (after a crash) would otherwise come back with Dask's defaults
                    worker_config = copy.deepcopy(dask.config.config)
                    self.cluster = LocalCluster(
                        n_workers=n,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",
                        resources=gpu,
                        silence_logs=logging.ERROR,
                        config=worker_config,
                    )
                self.client = Client(self.cluster)
            else:
                self.client = Client(where, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            if self.cluster is not None:
                self.cluster.close()
            raise SchedulerError(
                f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); check the address "
                "(tcp://HOST:8786) and that `dask scheduler` is running, or use --scheduler local"
            ) from exc
        self.dashboard = self.client.dashboard_link if self.client.dashboard_link else None

    def close(self) -> None:
        """Close the client (and the LocalCluster this runner started)."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> DaskRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self, job: RegionJob) -> None:
        """Register the prior plugin (every worker loads the prior now, or the run stops here)."""
        # The GPU resource is checked first: on CPU-only workers the plugin would fail to move the
        # prior to cuda, and the error would blame the prior instead of the missing GPU workers.
        if job.device == "cuda":
            have = self.client.run_on_scheduler(
                lambda dask_scheduler: sum(w.resources.get("GPU", 0) for w in dask_scheduler.workers.values())
            )
            if not have:
                raise SchedulerError(
                    "--device cuda needs workers with a GPU resource; start them with "
                    "`dask worker ADDRESS --resources GPU=1` (one per GPU)"
                )
        plugin = PriorPlugin(job.prior, job.device)
        try:
            self.client.register_plugin(plugin, name=plugin.name)
        except Exception as exc:
            # The scheduler keeps a plugin whose setup failed and runs it on every worker that joins
            # later (a restarted one included), failing there again: take it back.
            try:
                self.client.unregister_worker_plugin(plugin.name)
            except Exception:  # pragma: no cover - best effort
                log.debug("could not unregister %s", plugin.name, exc_info=True)
            if isinstance(exc, SchedulerError):
                raise
            cause: BaseException = exc
            while cause.__cause__ is not None and not isinstance(cause, SchedulerError):
                cause = cause.__cause__
            if isinstance(cause, SchedulerError):
                raise SchedulerError(str(cause)) from exc
            raise SchedulerError(f"the Dask workers could not load the prior {job.prior!r}: {exc}") from exc

    def submit(
        self, job: RegionJob, batches: list[list[Tile]], infer: Callable[..., np.ndarray] | None = None
    ) -> list[Any]:
        """Submit every batch of a region as one task each (keys: the job's digest, the batch, a token).

        ``infer`` replaces this runner's ``infer`` for these batches (a region's trained segmenter).
        """
        digest = job.digest()[:12]
        # A fresh token per submission: the scheduler gives every future of one key the same result,
        # and the fingerprint leaves out the work dir, so a run of the same job into another (or a
        # cleared) work dir would take an earlier run's results and never write its own tiles.
        token = uuid.uuid4().hex[:8]
        resources = {"GPU": 1} if job.device == "cuda" else None
        futures = []
        for i, batch in enumerate(batches):
            futures.append(
                self.client.submit(
                    _run_batch_task,
                    job,
                    batch,
                    infer or self.infer,
                    key=f"geo_ppp-{digest}-batch{i:05d}-{token}",
                    pure=False,
                    resources=resources,
                    retries=self.retries,
                )
            )
        return futures

    def collect(
        self,
        futures: Sequence[Any],
        batches: Sequence[Sequence[Tile]],
        on_tile: Callable[[Any, Tile, str], None],
        timings_for: Callable[[Any], dict[str, float]],
        on_batch_done: Callable[[Any], None] | None = None,
    ) -> None:
        """Take the results of submitted batches as they finish; on any error, cancel the rest.

        Args:
            futures: from :meth:`submit` (of one or several regions).
            batches: the batch of each future.
            on_tile: called with the future, each tile of its batch and the tile's status
                (``ran``, ``skipped`` or ``resumed``).
            timings_for: the stage-seconds dict a future's timings are added to.
            on_batch_done: called with each future once its tiles are reported.
        """
        from distributed import as_completed

        batch_of = {f.key: b for f, b in zip(futures, batches, strict=True)}
        try:
            for future in as_completed(futures):
                out = future.result()
                into = timings_for(future)
                for key, value in out["timings"].items():
                    into[key] = into.get(key, 0.0) + value
                for tile in batch_of[future.key]:
                    on_tile(future, tile, out["report"][tile.key])
                if on_batch_done is not None:
                    on_batch_done(future)
        except BaseException:
            self.client.cancel(list(futures))
            raise

    def run_task(self, fn: Callable[..., Any], job: RegionJob, *args: Any) -> Any:
        """Run ``fn(job, *args)`` as one task and wait for it; its exception is raised here.

        A region's training runs so, on a GPU worker for ``--device cuda``.
        """
        resources = {"GPU": 1} if job.device == "cuda" else None
        token = uuid.uuid4().hex[:8]
        future = self.client.submit(
            fn, job, *args, key=f"geo_ppp-{getattr(fn, '__name__', 'task')}-{token}", pure=False,
            resources=resources, retries=self.retries,
        )  # fmt: skip
        return future.result()

    def __call__(
        self,
        job: RegionJob,
        batches: list[list[Tile]],
        progress: Progress | None,
        timings: dict[str, float],
        infer: Callable[..., np.ndarray] | None = None,
    ) -> dict[str, str]:
        """Run a region's batches on the cluster; ``progress`` is driven as batches finish."""
        self.prepare(job)
        if self.dashboard and not self._shown:
            log.warning("Dask dashboard: %s", self.dashboard)
            self._shown = True
        report: dict[str, str] = {}
        total = sum(len(b) for b in batches)

        def on_tile(_future: Any, tile: Tile, status: str) -> None:
            report[tile.key] = status
            log.info("tile %s at (%d, %d): %s", tile.key, tile.y, tile.x, status)
            if progress is not None:
                progress(len(report), total, tile, status)

        self.collect(self.submit(job, batches, infer), batches, on_tile, lambda _future: timings)
        return report
