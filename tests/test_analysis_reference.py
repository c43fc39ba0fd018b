"""``analyze`` writes the numbers it wrote before the analysis was reorganised and its passes shared.

``tests/data/analysis_reference.json`` holds two reports written by the code of commit 981c6dd (before
the control pass was shared with the statistics pass, issue 25) at small settings; this test runs the
same analyses and asserts that every figure and every control number of the reference is still
there, unchanged. New keys may be added; none may change. Regenerate the file only for a deliberate
change of a number, with ``python tests/test_analysis_reference.py``.
"""
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import timm
import torch

REFERENCE = Path(__file__).parent / 'data' / 'analysis_reference.json'

# the controls' images (20) are no multiple of the batch size (8): the last control batch is partial
RUNS = {
    'digits_bottleneck': dict(layer=None, limit=36, level=dict(
        images=20, seeds=2, orders=10, calibration_images=12, permutations=19)),
    'digits_hidden_transforms': dict(layer='blocks.3', limit=16, level=dict(
        images=None, seeds=1, orders=5, calibration_images=8, permutations=9, transforms=True)),
}


def _model():
    torch.manual_seed(0)
    return timm.create_model('test_efficientnet', pretrained_cfg_overlay=dict(input_size=(3, 96, 96))).eval()


def run_reference_analyses(monkeypatch=None) -> Dict[str, Dict[str, Any]]:
    """The report of each analysis of ``RUNS`` as ``report.json`` holds it."""
    from timm_u1.analysis import controls as controls_mod
    from timm_u1.analysis.analyzer import analyze

    reports = {}
    saved = dict(controls_mod.CONTROL_LEVELS)
    try:
        for name, run in RUNS.items():
            controls_mod.CONTROL_LEVELS['fast'] = controls_mod.ControlLevel(**run['level'])
            report = analyze(_model(), 'digits', layer=run['layer'], limit=run['limit'], batch_size=8,
                             permutations=49, seed=3, progress=False, plots=False, controls='fast')
            reports[name] = json.loads(json.dumps(report.to_dict()))
    finally:
        controls_mod.CONTROL_LEVELS.clear()
        controls_mod.CONTROL_LEVELS.update(saved)
    return reports


def _differences(reference: Any, current: Any, where: str) -> List[str]:
    """Every leaf of ``reference`` that ``current`` lacks or holds with another value."""
    if isinstance(reference, dict):
        if not isinstance(current, dict):
            return [f'{where}: {type(current).__name__} instead of a dict']
        out = []
        for key, value in reference.items():
            if key not in current:
                out.append(f'{where}.{key}: missing')
            else:
                out += _differences(value, current[key], f'{where}.{key}')
        return out
    if isinstance(reference, list):
        if not isinstance(current, list) or len(current) != len(reference):
            return [f'{where}: list of {len(reference)} became {current!r:.80}']
        return [d for i, (a, b) in enumerate(zip(reference, current)) for d in _differences(a, b, f'{where}[{i}]')]
    if isinstance(reference, float) and isinstance(current, (int, float)):
        # bitwise on the machine that wrote the file; 1e-9 leaves room for another BLAS, never for a change
        same = math.isclose(reference, current, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(reference) and math.isnan(current))
        return [] if same else [f'{where}: {reference!r} became {current!r}']
    return [] if reference == current else [f'{where}: {reference!r} became {current!r}']


def test_reports_are_the_reference_reports():
    reference = json.loads(REFERENCE.read_text())
    if reference['timm'] != timm.__version__ or reference['torch'].split('+')[0] != torch.__version__.split('+')[0]:
        pytest.skip(f"the reference was written with timm {reference['timm']} and torch {reference['torch']}, "
                    f"whose random initialisations this test relies on")
    current = run_reference_analyses()
    problems = []
    for name, report in reference['reports'].items():
        for section in ('figures', 'controls'):
            problems += _differences(report[section], current[name][section], f'{name}.{section}')
    assert not problems, '\n'.join(problems[:30])


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({'timm': timm.__version__, 'torch': torch.__version__,
                                     'reports': run_reference_analyses()}, sort_keys=True) + '\n')
    print(f'wrote {REFERENCE}')
