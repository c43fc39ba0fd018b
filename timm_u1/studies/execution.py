""" Running a study's independent runs: here, in worker processes of one thread each, or shared among
the processes of ``accelerate launch``.

* One process, ``jobs=1``: every run in this process, in order.
* ``jobs=N``: a pool of N worker processes (spawned, one torch thread each); results come back in the
  order they finish, and the caller records each at once.
* Under ``accelerate launch`` with W processes: process i takes runs i, i + W, ...; each process
  records its own results, then all results are gathered to every process. A back-end whose runs
  start Accelerate themselves (the trainer) runs them in worker processes stripped of the launch's
  process-group variables, so each run is a one-process run on this process's GPU (if any).

A run's result does not depend on where it ran: each is seeded by its own settings alone.
"""
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..runs.shard import gather, process_group
from .ledger import Run

__all__ = ['Runner']

_logger = logging.getLogger(__name__)

# what makes torch.distributed / Accelerate see a process group (torchrun and MPI launchers)
_GROUP_VARIABLES = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'GROUP_WORLD_SIZE',
                    'ROLE_RANK', 'ROLE_WORLD_SIZE', 'ROLE_NAME', 'MASTER_ADDR', 'MASTER_PORT', 'PMI_SIZE',
                    'OMPI_COMM_WORLD_SIZE', 'MV2_COMM_WORLD_SIZE', 'ACCELERATE_USE_DEEPSPEED', 'ACCELERATE_USE_FSDP')

_worker_backend: Any = None


def _start_worker(backend: Any, visible_gpu: Optional[str]) -> None:
    """In a new worker: one torch thread, no process group, this launch process's GPU only."""
    global _worker_backend
    import torch

    for name in list(os.environ):
        if name in _GROUP_VARIABLES or name.startswith('TORCHELASTIC_'):
            del os.environ[name]
    if visible_gpu is not None:
        os.environ['CUDA_VISIBLE_DEVICES'] = visible_gpu
    os.environ['OMP_NUM_THREADS'] = '1'
    torch.set_num_threads(1)
    _worker_backend = backend


def _timed(backend: Any, run: Run) -> Tuple[Run, Dict[str, Any]]:
    started = time.perf_counter()
    result = dict(backend.run(run))
    result['seconds'] = time.perf_counter() - started
    return run, result


def _work(run: Run) -> Tuple[Run, Dict[str, Any]]:
    return _timed(_worker_backend, run)


def _visible_gpu() -> Optional[str]:
    """This launch process's GPU, for its workers (None: no GPU, or not launched)."""
    import torch

    local = os.environ.get('LOCAL_RANK')
    if local is None or not torch.cuda.is_available():
        return None
    visible = [d for d in os.environ.get('CUDA_VISIBLE_DEVICES', '').split(',') if d.strip()]
    index = int(local)
    return visible[index] if index < len(visible) else str(index)


class Runner:
    """Runs a back-end's runs, here or in a pool of worker processes kept for the whole study."""

    def __init__(self, backend: Any, jobs: int):
        self.backend, self.jobs = backend, jobs
        self.index, self.count = process_group()
        # under accelerate launch a run that starts Accelerate itself needs a process outside the group
        self.isolated = self.count > 1 and getattr(backend, 'isolated_runs', False)
        self._pool: Optional[ProcessPoolExecutor] = None

    def __enter__(self) -> 'Runner':
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            # a failed or interrupted study stops its workers instead of waiting for them
            self._pool.shutdown(wait=exc[0] is None, cancel_futures=True)
            self._pool = None

    def _results(self, runs: Sequence[Run]) -> Iterator[Tuple[Run, Dict[str, Any]]]:
        if self.jobs == 1 and not self.isolated:
            for run in runs:
                yield _timed(self.backend, run)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=multiprocessing.get_context('spawn'), initializer=_start_worker,
                initargs=(self.backend, _visible_gpu()))
        futures = [self._pool.submit(_work, run) for run in runs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def run_all(self, runs: Sequence[Run], record: Callable[[Run, Dict[str, Any], int], None],
                desc: str) -> Dict[Run, Dict[str, Any]]:
        """Run ``runs`` (this process's share of them, under ``accelerate launch``) and return every result.

        ``record(run, result, process_index)`` is called in this process as each run finishes, so a
        stopped study keeps what it finished.
        """
        from tqdm.auto import tqdm

        index, count = self.index, self.count
        mine = list(runs)[index::count]
        done: Dict[Run, Dict[str, Any]] = {}
        failure: Optional[BaseException] = None
        try:
            with tqdm(total=len(mine), desc=desc, disable=index != 0 or not mine, leave=False) as bar:
                for run, result in self._results(mine) if mine else ():
                    record(run, result, index)
                    done[run] = result
                    bar.update()
        except Exception as e:
            if count == 1:
                raise
            failure = e  # told to the other processes below, so that none waits for this one forever
        if count == 1:
            return done
        parts: List[Tuple[Dict[Run, Dict[str, Any]], Optional[str]]] = gather(
            (done, None if failure is None else f'{type(failure).__name__}: {failure}'))
        if failure is not None:
            raise failure
        failed = [(i, message) for i, (_, message) in enumerate(parts) if message]
        if failed:
            raise RuntimeError(f'process {failed[0][0]} of the launch failed: {failed[0][1]}')
        merged: Dict[Run, Dict[str, Any]] = {}
        for part, _ in parts:
            merged.update(part)
        _logger.info('%s: %d runs across %d processes', desc, len(merged), count)
        return merged
