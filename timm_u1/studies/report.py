""" A study's ``study.json``, checked field by field when loaded, and the tables its report is made of.

Both studies write the same structure: ``settings`` (what was run, including ``seeds``, ``arms`` and
``margin``), ``tasks`` (per task: sizes, the ``selection`` of each arm, and the ``test`` results of
each arm: ``param``, ``lr``, and one ``top1`` and ``correct`` string per test seed),
``execution`` and ``seconds``.
"""
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..files import read_json
from .arms import REFERENCE, comparison_label, comparisons_of, comparison_name, LABELS

__all__ = ['load_study', 'design_lines', 'verdict_line', 'comparison_table']


def _fail(path: Path, field: str, problem: str) -> ValueError:
    return ValueError(f'{path}: field {field!r} {problem}; rerun the study (or restore its study.json) to report it.')


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_arm(path: Path, where: str, r: Any, num_seeds: int) -> None:
    if not isinstance(r, dict):
        raise _fail(path, where, 'must be an object')
    for key in ('param', 'lr'):
        if not _number(r.get(key)):
            raise _fail(path, f'{where}.{key}', f'must be a finite number, got {r.get(key)!r}')
    top1, correct = r.get('top1'), r.get('correct')
    if not isinstance(top1, list) or len(top1) != num_seeds or not all(_number(v) and 0 <= v <= 100 for v in top1):
        raise _fail(path, f'{where}.top1', f'must be {num_seeds} numbers in [0, 100] (one per test seed)')
    if (not isinstance(correct, list) or len(correct) != num_seeds
            or not all(isinstance(c, str) and c and not set(c) - {'0', '1'} for c in correct)
            or len({len(c) for c in correct}) != 1):
        raise _fail(path, f'{where}.correct', f'must be {num_seeds} strings of 0 and 1 of one length (the test images)')


def _check_task(path: Path, name: str, task: Any, arms: Sequence[str], num_seeds: int) -> None:
    where = f'tasks.{name}'
    if not isinstance(task, dict):
        raise _fail(path, where, 'must be an object')
    for key in ('num_train', 'num_val', 'num_test'):
        if not isinstance(task.get(key), int) or isinstance(task.get(key), bool) or task[key] < 0:
            raise _fail(path, f'{where}.{key}', f'must be an integer >= 0, got {task.get(key)!r}')
    for part in ('selection', 'test'):
        if not isinstance(task.get(part), dict) or set(task[part]) != set(arms):
            raise _fail(path, f'{where}.{part}', f'must hold exactly the arms {list(arms)}')
    for arm in arms:
        chosen = task['selection'][arm].get('chosen') if isinstance(task['selection'][arm], dict) else None
        if not isinstance(chosen, dict) or not all(_number(chosen.get(k)) for k in ('param', 'lr')):
            raise _fail(path, f'{where}.selection.{arm}.chosen', 'must hold a finite param and lr')
        _check_arm(path, f'{where}.test.{arm}', task['test'][arm], num_seeds)
        lengths = {len(c) for c in task['test'][arm]['correct']} | {task['num_test']}
        if len(lengths) != 1:
            raise _fail(path, f'{where}.test.{arm}.correct', f'must have num_test = {task["num_test"]} characters')


def load_study(output: Path, required: Mapping[str, Callable[[Any], bool]] = ()) -> Dict[str, Any]:
    """``OUTPUT/study.json``, with every field a report reads checked; a bad one is named in one line.

    ``required``: further settings the caller's report reads, each with its check.
    """
    path = Path(output) / 'study.json'
    if not path.is_file():
        raise FileNotFoundError(f'{path} does not exist; run the study first (without --report).')
    study = read_json(path)
    if not isinstance(study, dict):
        raise _fail(path, 'study', 'must be an object')
    s = study.get('settings')
    if not isinstance(s, dict):
        raise _fail(path, 'settings', 'must be an object')
    seeds, arms = s.get('seeds'), s.get('arms')
    if not isinstance(seeds, list) or len(seeds) < 2 or not all(isinstance(v, int) for v in seeds):
        raise _fail(path, 'settings.seeds', 'must be a list of >= 2 integers')
    if not isinstance(arms, list) or REFERENCE not in arms or not all(a in LABELS for a in arms):
        raise _fail(path, 'settings.arms', f'must list known arms ({list(LABELS)}), including {REFERENCE!r}')
    if not _number(s.get('margin')) or s['margin'] <= 0:
        raise _fail(path, 'settings.margin', f'must be a finite number > 0, got {s.get("margin")!r}')
    for key, check in dict(required).items():
        if not check(s.get(key)):
            raise _fail(path, f'settings.{key}', f'is missing or invalid ({s.get(key)!r})')
    tasks = study.get('tasks')
    if not isinstance(tasks, dict) or not tasks:
        raise _fail(path, 'tasks', 'must be a non-empty object')
    for name, task in tasks.items():
        _check_task(path, name, task, arms, len(seeds))
    return study


def design_lines(study: Dict[str, Any], summary: Dict[str, Any]) -> List[str]:
    """What every report states: seeds, the margin, the statistics, and the family Holm runs over."""
    s = study['settings']
    family = sum(1 for task in summary.values() for o in task.values() if 'diff' in o)
    return [f'{len(s["seeds"])} test seeds; margin ±{s["margin"]:g} points; 95% t intervals from the unbiased '
            f'variance over seeds and test images (crossed random effects); Holm over the family of all '
            f'{family} comparisons of this study; MDE: the smallest true difference the superiority test '
            f'detects with 80% power at alpha 0.05 / {family}.']


def verdict_line(summary: Dict[str, Any]) -> str:
    """How many comparisons of the study got each verdict, e.g. '0 better, 0 worse, 1 equivalent, 23 inconclusive'."""
    verdicts = [o['verdict'].split(' (')[0] for task in summary.values() for o in task.values() if 'verdict' in o]
    counts = ', '.join(f'{verdicts.count(v)} {v}' for v in ('better', 'worse', 'equivalent', 'inconclusive'))
    return f'**Verdicts of the {len(verdicts)} comparisons: {counts}.**'


def _statistics(o: Dict[str, Any]) -> str:
    return (f'{o["diff"]:+.2f} [{o["lo"]:+.2f}, {o["hi"]:+.2f}] | {o["wins"]}/{o["ties"]} | '
            f'{o["p_better_holm"]:.3f} / {o["p_worse_holm"]:.3f} / {o["p_tost_holm"]:.3f} | {o["mde"]:.2f} |')


def comparison_table(task: Dict[str, Any], summary: Dict[str, Any],
                     extra: Optional[Dict[str, Callable[[str], str]]] = None) -> List[str]:
    """One task's table: CE, then each comparison; ``extra`` maps a column title to its value per arm."""
    extra = extra or {}
    titles = ''.join(f' {t} |' for t in extra)
    lines = ['| comparison | chosen param, lr | top-1 mean ± std (%) | difference [95% CI] | wins/ties | '
             f'p better / worse / TOST (Holm) | MDE |{titles} verdict |',
             '|---|---|---|---|---|---|---|' + '---|' * len(extra) + '---|']
    ce = summary[REFERENCE]
    cells = ''.join(f' {f(REFERENCE)} |' for f in extra.values())
    lines.append(f'| {LABELS[REFERENCE]} | {ce["param"]:g}, {ce["lr"]:g} | {ce["mean"]:.2f} ± {ce["std"]:.2f} | — | — '
                 f'| — | — |{cells} reference |')
    for arm, reference in comparisons_of(list(task['test'])):
        o = summary[comparison_name(arm, reference)]
        if reference == REFERENCE:
            a = summary[arm]
            cells = ''.join(f' {f(arm)} |' for f in extra.values())
            head = f'| {comparison_label(arm, reference)} | {a["param"]:g}, {a["lr"]:g} | {a["mean"]:.2f} ± {a["std"]:.2f} |'
        else:
            cells = ' — |' * len(extra)
            head = f'| {comparison_label(arm, reference)} | same as {LABELS[arm]} | — |'
        lines.append(f'{head} {_statistics(o)}{cells} **{o["verdict"]}** |')
    return lines
