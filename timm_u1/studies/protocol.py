""" The one protocol of the CE vs CE + U(1) studies, whatever trains their runs.

Per task (a dataset, or a low-shot draw of one):

1. **Selection, on validation only.** Every arm trains each configuration of its grid (learning
   rate, and its own parameter: lambda, or the smoothing) with every selection seed, evaluated on a
   validation split carved from the training data; it takes the configuration with the best mean
   validation top-1 (the first of equals, in grid order). A one-point grid is its own choice and
   needs no selection run. The permuted-angle arm takes the natural-order arm's choice
   (:data:`~timm_u1.studies.arms.PERMUTED`).
2. **Test.** Each arm's choice trains with every test seed (disjoint from the selection seeds) and
   is evaluated on the test split once. A seed fixes initialisation, data order and augmentation,
   so the arms of one seed are paired.
3. **Statistics**: :func:`~timm_u1.studies.paired.summarize_family` over every comparison of the
   study (its family).

A :class:`Backend` trains one run: :class:`~timm_u1.studies.scratch.ScratchBackend` from scratch
through the trainer, :class:`~timm_u1.studies.frozen.FrozenBackend` on a frozen backbone's cached
features. Runs are independent, so they run in any order and anywhere
(:class:`~timm_u1.studies.execution.Runner`); their results are kept as they finish
(:class:`~timm_u1.studies.ledger.Ledger`), so a stopped study resumes, and ``study.json`` is the
same for any number of jobs or processes.
"""
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..files import write_json
from ..runs import RunFolder
from ..runs.shard import barrier, on_main, process_group
from .arms import PERMUTED, check_arms
from .execution import Runner
from .ledger import Ledger, Run

__all__ = ['Backend', 'Design', 'run_protocol', 'choose']

_logger = logging.getLogger(__name__)


class Backend:
    """How a study trains one run. Subclasses say what the runs depend on and how one is trained."""

    #: True if a run starts Accelerate itself (the trainer), so under ``accelerate launch`` it needs a
    #: process outside the launch's process group
    isolated_runs = False

    def identity(self) -> Dict[str, Any]:
        """Every setting a run's result depends on, besides the run's own (task, arm, param, lr, seed)."""
        raise NotImplementedError

    def tasks(self) -> List[str]:
        raise NotImplementedError

    def grid(self, arm: str) -> List[Tuple[float, float]]:
        """(param, lr) configurations the arm's selection tries, in order of preference among equals."""
        raise NotImplementedError

    def prepare(self) -> Dict[str, Dict[str, int]]:
        """Make what every run reads (splits, feature caches); per task, its train / validation / test sizes.

        Called on the main process first, then on the others (which find it made).
        """
        raise NotImplementedError

    def run(self, run: Run) -> Dict[str, Any]:
        """Train ``run``; its evaluation: ``top1`` (%), ``correct`` (a 0/1 string per image) and any extras."""
        raise NotImplementedError

    def write_report(self, output: Path) -> Any:
        raise NotImplementedError


@dataclass
class Design:
    """What a study compares, and with how many seeds."""
    arms: Sequence[str]
    seeds: Sequence[int]
    selection_seeds: Sequence[int]
    margin: float
    known_arms: Sequence[str] = field(default=(), repr=False)

    def __post_init__(self):
        self.arms, self.seeds, self.selection_seeds = tuple(self.arms), tuple(self.seeds), tuple(self.selection_seeds)
        check_arms(self.arms, self.known_arms or self.arms)
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.selection_seeds)) != len(self.selection_seeds):
            raise ValueError(f'Seeds must differ (got {list(self.seeds)}, selection {list(self.selection_seeds)}): '
                             f'a repeated seed counts one run twice.')
        if set(self.seeds) & set(self.selection_seeds):
            raise ValueError(f'Test seeds {sorted(set(self.seeds) & set(self.selection_seeds))} are also selection '
                             f'seeds; choose --selection-seeds disjoint from --seeds, so no test run repeats a '
                             f'selection run.')
        if len(self.seeds) < 2:
            raise ValueError(f'Paired statistics need >= 2 test seeds, got {list(self.seeds)}.')
        if not self.selection_seeds:
            raise ValueError('--selection-seeds needs at least one seed.')
        if any(s < 0 for s in self.seeds + self.selection_seeds):
            raise ValueError('Seeds must be >= 0.')
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin > 0):
            raise ValueError(f'The equivalence margin must be a finite number > 0, got {self.margin}.')


def _selection_runs(backend: Backend, design: Design) -> List[Run]:
    runs = []
    for task in backend.tasks():
        for arm in design.arms:
            grid = backend.grid(arm)
            if arm in PERMUTED or len(grid) == 1:
                continue  # takes another arm's choice, or has no choice to make
            runs += [Run(task, 'selection', arm, p, lr, s) for p, lr in grid for s in design.selection_seeds]
    return runs


def choose(backend: Backend, design: Design, task: str, results: Dict[Run, Dict[str, Any]]) -> Dict[str, Any]:
    """Per arm: its selection grid with mean validation top-1, and the chosen configuration."""
    selection: Dict[str, Any] = {}
    for arm in design.arms:
        if arm in PERMUTED:
            continue
        grid = backend.grid(arm)
        if len(grid) == 1:
            (p, lr), = grid
            selection[arm] = dict(grid=[dict(param=p, lr=lr, val_top1=None, val_top1_per_seed=[])],
                                  chosen=dict(param=p, lr=lr), fixed=True)
            continue
        rows = []
        for p, lr in grid:
            per_seed = [results[Run(task, 'selection', arm, p, lr, s)]['top1'] for s in design.selection_seeds]
            rows.append(dict(param=p, lr=lr, val_top1=float(np.mean(per_seed)), val_top1_per_seed=per_seed))
        best = max(rows, key=lambda r: r['val_top1'])  # max keeps the first of equals
        selection[arm] = dict(grid=rows, chosen=dict(param=best['param'], lr=best['lr']), fixed=False)
        _logger.info('%s %s: chose param %g, lr %g (validation top-1 %.2f)', task, arm, best['param'], best['lr'],
                     best['val_top1'])
    for permuted, natural in PERMUTED.items():
        if permuted in design.arms:
            selection[permuted] = dict(grid=[], chosen=dict(selection[natural]['chosen']), inherited_from=natural)
    return selection


def _test_runs(design: Design, selections: Dict[str, Dict[str, Any]]) -> List[Run]:
    """Seed-major: a study stopped part-way has complete pairs for its first seeds."""
    runs = []
    for seed in design.seeds:
        for task, selection in selections.items():
            for arm in design.arms:
                chosen = selection[arm]['chosen']
                runs.append(Run(task, 'test', arm, chosen['param'], chosen['lr'], seed))
    return runs


def _test_results(design: Design, task: str, selection: Dict[str, Any],
                  results: Dict[Run, Dict[str, Any]]) -> Dict[str, Any]:
    test = {}
    for arm in design.arms:
        chosen = selection[arm]['chosen']
        per_seed = [results[Run(task, 'test', arm, chosen['param'], chosen['lr'], s)] for s in design.seeds]
        test[arm] = dict(param=chosen['param'], lr=chosen['lr'])
        for key in per_seed[0]:
            if key != 'seconds':  # how long a run took depends on where it ran; the results do not
                test[arm][key] = [r[key] for r in per_seed]
    return test


def run_protocol(backend: Backend, design: Design, output: Path, settings: Dict[str, Any],
                 jobs: int = 1) -> Dict[str, Any]:
    """Run the study (resuming its finished runs), write ``OUTPUT/study.json`` and the report; returns the study.

    ``settings`` are recorded in study.json as they are; ``jobs`` worker processes per process.
    """
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f'jobs must be an integer >= 1, got {jobs!r}.')
    started = time.perf_counter()
    index, count = process_group()
    folder = RunFolder(output, '--output')  # a bad --output fails here, before any work
    try:
        on_main(folder.acquire)  # one study per folder; only the main process writes its files
        ledger = Ledger(output, backend.identity())
        on_main(ledger.check_identity)
        t0 = time.perf_counter()
        sizes = on_main(backend.prepare)
        barrier()
        sizes = sizes if index == 0 else backend.prepare()
        prepare_seconds = time.perf_counter() - t0
        results = ledger.read()
        barrier()  # every process has read the same finished runs before any appends more

        with Runner(backend, jobs) as runner:
            def execute(runs: List[Run], desc: str) -> None:
                pending = [r for r in dict.fromkeys(runs) if r not in results]
                results.update(runner.run_all(pending, ledger.append, desc))

            t0 = time.perf_counter()
            execute(_selection_runs(backend, design), 'selection runs')
            selections = {task: choose(backend, design, task, results) for task in backend.tasks()}
            selection_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            execute(_test_runs(design, selections), 'test runs')
        tasks = {task: dict(sizes[task], selection=selections[task],
                            test=_test_results(design, task, selections[task], results))
                 for task in backend.tasks()}
        used = set(_selection_runs(backend, design)) | set(_test_runs(design, selections))
        study = dict(settings=settings, tasks=tasks, execution=dict(jobs=jobs, processes=count),
                     seconds=dict(prepare=prepare_seconds, selection=selection_seconds, test=time.perf_counter() - t0,
                                  total=time.perf_counter() - started,
                                  runs=float(sum(results[r].get('seconds', 0.0) for r in used))))

        def write() -> None:
            write_json(Path(output) / 'study.json', study)
            backend.write_report(Path(output))

        on_main(write)
        return study
    finally:
        folder.release()  # a no-op where it is not held
