""" The results of a study's finished runs, kept so that a stopped study resumes where it stopped.

``OUTPUT/results/identity.json`` holds what every run's result depends on (the back-end's
identity: model, weights, data, budget); ``OUTPUT/results/rank<i>.jsonl`` one line per finished
run, appended (and flushed to disk) by process ``i`` as soon as the run ends. A study rerun with
the same identity skips every run found here; with another identity it is refused, naming each
differing setting. Every line is checked when read.
"""
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Tuple

from ..files import read_json, write_json
from ..runs.identity import check_same_run

__all__ = ['Run', 'Ledger', 'PHASES']

PHASES = ('selection', 'test')
FOLDER = 'results'


class Run(NamedTuple):
    """One training run of a study; hashable, the key of its result."""
    task: str
    phase: str  # 'selection' (evaluated on validation) or 'test'
    arm: str
    param: float  # the arm's parameter: lambda, the smoothing, or 0
    lr: float
    seed: int

    def __str__(self) -> str:
        return f'{self.task} {self.phase} {self.arm} param {self.param:g} lr {self.lr:g} seed {self.seed}'


def _bad(where: str, field: str, problem: str) -> ValueError:
    return ValueError(f'{where}: field {field!r} {problem}; the results file is corrupt (delete that line or the '
                      f'file to rerun its runs).')


def check_result(result: Any, where: str) -> Dict[str, Any]:
    """A run's result: top-1 (%) and the per-image correctness it was computed from, consistent."""
    if not isinstance(result, dict):
        raise _bad(where, 'result', f'must be an object, got {type(result).__name__}')
    top1, correct = result.get('top1'), result.get('correct')
    if not isinstance(top1, (int, float)) or isinstance(top1, bool) or not 0 <= top1 <= 100:
        raise _bad(where, 'result.top1', f'must be a number in [0, 100], got {top1!r}')
    if not isinstance(correct, str) or not correct or set(correct) - {'0', '1'}:
        raise _bad(where, 'result.correct', 'must be a non-empty string of 0 and 1')
    if not math.isclose(100 * correct.count('1') / len(correct), top1, abs_tol=1e-6):
        raise _bad(where, 'result.top1', f'is {top1}, but result.correct gives {100 * correct.count("1") / len(correct)}')
    return result


def _parse_line(line: str, where: str) -> Tuple[Run, Dict[str, Any]]:
    record = json.loads(line)
    if not isinstance(record, dict):
        raise _bad(where, 'record', 'must be an object')
    types = (('task', str), ('phase', str), ('arm', str), ('param', (int, float)), ('lr', (int, float)),
             ('seed', int))
    for name, kind in types:
        value = record.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _bad(where, name, f'must be {getattr(kind, "__name__", "a number")}, got {value!r}')
    if record['phase'] not in PHASES:
        raise _bad(where, 'phase', f'must be one of {list(PHASES)}, got {record["phase"]!r}')
    for name, ok, rule in (('param', math.isfinite(record['param']) and record['param'] >= 0, 'a finite number >= 0'),
                           ('lr', math.isfinite(record['lr']) and record['lr'] > 0, 'a finite number > 0'),
                           ('seed', record['seed'] >= 0, 'an integer >= 0')):
        if not ok:
            raise _bad(where, name, f'must be {rule}, got {record[name]!r}')
    run = Run(record['task'], record['phase'], record['arm'], float(record['param']), float(record['lr']),
              record['seed'])
    return run, check_result(record.get('result'), where)


class Ledger:
    """The finished runs of the study in ``output``, and what they were computed with."""

    def __init__(self, output: Path, identity: Mapping[str, Any]):
        self.folder = Path(output) / FOLDER
        self.identity = json.loads(json.dumps(dict(identity), default=str))

    def check_identity(self) -> None:
        """Record the identity on the first run; afterwards refuse another, naming what differs."""
        path = self.folder / 'identity.json'
        if path.is_file():
            stored = read_json(path)
            if not isinstance(stored, dict):
                raise ValueError(f'{path} must hold an object of settings; delete {self.folder} to start over.')
            check_same_run(stored, self.identity, self.folder,
                           f'choose another --output, or delete {self.folder} (and study.json) to start over',
                           state="a study's finished runs")
        else:
            write_json(path, self.identity)

    def read(self) -> Dict[Run, Dict[str, Any]]:
        """Every finished run's result (the first, if a run was recorded twice)."""
        results: Dict[Run, Dict[str, Any]] = {}
        for path in sorted(self.folder.glob('rank*.jsonl')):
            lines = path.read_text(encoding='utf-8').splitlines()
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    run, result = _parse_line(line, f'{path}:{n}')
                except json.JSONDecodeError:
                    if n == len(lines):
                        continue  # a process killed while appending tears the last line only
                    raise ValueError(f'{path}:{n} is not valid JSON; the results file is corrupt (delete that '
                                     f'line or the file to rerun its runs).') from None
                results.setdefault(run, result)
        return results

    def append(self, run: Run, result: Dict[str, Any], writer: int = 0) -> None:
        """Add a finished run (process ``writer``'s own file: processes never share one)."""
        record = dict(task=run.task, phase=run.phase, arm=run.arm, param=run.param, lr=run.lr, seed=run.seed,
                      result=result)
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f'rank{writer}.jsonl', 'a', encoding='utf-8') as f:
            f.write(json.dumps(record) + '\n')
            f.flush()
            os.fsync(f.fileno())
