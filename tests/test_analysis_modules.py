"""timm_u1.analysis reads as one concept per module: sizes, logging instead of print, short docstrings, and the
names other parts (and users) import still there."""
import ast
import importlib
import warnings
from pathlib import Path

import pytest

import timm_u1.analysis

ANALYSIS = Path(timm_u1.analysis.__file__).resolve().parent
MODULES = sorted(ANALYSIS.glob('*.py'))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding='utf-8'))


@pytest.mark.parametrize('path', MODULES, ids=lambda p: p.name)
def test_modules_and_functions_are_short(path):
    lines = len(path.read_text(encoding='utf-8').splitlines())
    assert lines <= 500, f'{path.name} has {lines} lines'
    long = [f'{node.name} ({node.end_lineno - node.lineno + 1} lines)' for node in ast.walk(_tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80]
    assert not long, f'{path.name}: functions over 80 lines: {long}'


@pytest.mark.parametrize('path', MODULES, ids=lambda p: p.name)
def test_library_code_logs_and_never_prints(path):
    tree = _tree(path)
    prints = [node.lineno for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'print']
    assert not prints, f'{path.name} prints on lines {prints}; log through logging.getLogger(__name__)'
    print_defaults = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id == 'print']
    assert not print_defaults, f'{path.name} passes print around (lines {print_defaults})'


@pytest.mark.parametrize('path', MODULES, ids=lambda p: p.name)
def test_module_docstrings_say_what_the_module_holds_not_its_design(path):
    doc = ast.get_docstring(_tree(path)) or ''
    assert doc, f'{path.name} has no docstring'
    assert len(doc.splitlines()) <= 12, f'{path.name}: a {len(doc.splitlines())}-line docstring belongs in docs/analysis.md'


def test_the_verdict_words_and_the_old_names_still_import():
    from timm_u1.analysis import claims, controls

    # timm_u1.early (branch filters) imports these from controls
    assert (controls.SUPPORTED, controls.NOT_DISTINGUISHABLE, controls.CONTRADICTED) == (
        claims.SUPPORTED, claims.NOT_DISTINGUISHABLE, claims.CONTRADICTED)
    assert controls.ALPHA == claims.ALPHA
    from timm_u1.analysis.controls import format_value, random_init_copy  # noqa: F401  (timm_u1.early uses both)

    # everything controls and stats exported before keeps importing, with a warning naming its new home
    old_controls = ['input_map', 'channel_orders', 'hue_vectors', 'centroid_vectors', 'transformed_copies',
                    'FollowsInput', 'recalibrate_batchnorm', 'MapControls', 'run_controls', 'controls_from_maps',
                    'assemble', 'verdicts', 'render_markdown', 'ControlLevel', 'CONTROL_LEVELS']
    for name in old_controls:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            assert getattr(controls, name) is not None, name
    old_stats = ['SombreroStatistics', 'rayleigh_test', 'rayleigh_log10_p', 'RAYLEIGH_QUESTION', 'circular_summary',
                 'AngleClassAccumulator', 'class_statistic', 'binomial_two_sided_p', 'mcnemar_p']
    stats = importlib.import_module('timm_u1.analysis.stats')
    for name in old_stats:
        with pytest.warns(DeprecationWarning, match=f'timm_u1.analysis.stats.{name} moved to timm_u1.analysis.'):
            assert getattr(stats, name) is not None
    with pytest.warns(DeprecationWarning, match='timm_u1.analysis.controls.render_markdown moved to'):
        controls.render_markdown


def test_sign_test_and_mcnemar_are_scipys_binomial_test():
    import torch
    from scipy.stats import binomtest

    from timm_u1.analysis.signtest import mcnemar_p, sign_test_p

    for n in (1, 2, 7, 20, 192):
        for k in range(0, n + 1, max(1, n // 9)):
            assert sign_test_p(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-12)
    assert sign_test_p(0, 0) == 1.0
    a = torch.tensor([True, True, False, True, False, True])
    b = torch.tensor([False, True, True, False, False, False])
    assert mcnemar_p(a, b) == pytest.approx(binomtest(3, 4, 0.5).pvalue)
    with pytest.raises(ValueError, match='same images'):
        mcnemar_p(a, b[:3])
