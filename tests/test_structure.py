"""The package reads one way: sub-packages named for what they hold, imports running downwards between them,
argparse only under timm_u1/cli."""
import ast
from pathlib import Path
from typing import Dict, Set

import timm_u1

PACKAGE = Path(timm_u1.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def _imports(path: Path) -> Set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    name = _module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ''
            found.add(module)
            found.update(f'{module}.{alias.name}' for alias in node.names)
    return found


def _graph() -> Dict[str, Set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
    graph = {}
    for name, path in files.items():
        # a package's __init__ re-exporting its children is not an edge back up
        graph[name] = {m for m in _imports(path) if m in files and m != name and not name.startswith(m + '.')
                       and not (path.name == '__init__.py' and m.startswith(name + '.'))}
    return graph


def test_internal_imports_have_no_cycle():
    graph = _graph()
    assert len(graph) > 15  # the walk found the package
    state: Dict[str, int] = {}
    stack = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError('import cycle: ' + ' -> '.join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


# Each part of the package, from the ground floor up: a module may import its own part and the parts
# below it, never a part above or beside it. A new sub-package must be placed here.
LAYERS = (
    ('timm_u1._moved', 'timm_u1.version', 'timm_u1.errors'),
    ('timm_u1.files',),  # names its errors with timm_u1.errors
    ('timm_u1.figures',),
    ('timm_u1.core',),
    ('timm_u1.io',),
    ('timm_u1.data',),
    ('timm_u1.runs',),
    ('timm_u1.analysis',),
    ('timm_u1.memory', 'timm_u1.training', 'timm_u1.early'),
    ('timm_u1.publish', 'timm_u1.studies'),
    ('timm_u1.cli',),
)


def _part(module: str) -> str:
    if module == 'timm_u1':
        return module
    return '.'.join(module.split('.')[:2])


def _rank(part: str) -> int:
    for rank, parts in enumerate(LAYERS):
        if part in parts:
            return rank
    raise AssertionError(f'{part} is not placed in LAYERS of tests/test_structure.py')


def test_parts_import_only_downwards():
    graph = _graph()
    parts = {_part(m) for m in graph} - {'timm_u1'}
    assert {'timm_u1.core', 'timm_u1.io', 'timm_u1.analysis', 'timm_u1.cli'} <= parts
    wrong = []
    for module, imported in graph.items():
        if module == 'timm_u1':  # the package's __init__ re-exports the public API
            continue
        here = _part(module)
        for target in imported:
            there = _part(target)
            if there == 'timm_u1' or there == here:
                continue
            if _rank(there) >= _rank(here):
                wrong.append(f'{module} -> {target}')
    assert not wrong, 'imports that do not run downwards: ' + ', '.join(sorted(wrong))


def test_old_module_paths_still_import_with_a_deprecation_warning():
    import importlib
    import sys

    import pytest

    sys.modules.pop('timm_u1.finetune', None)
    with pytest.warns(DeprecationWarning, match='timm_u1.finetune moved to timm_u1.studies.frozen'):
        old = importlib.import_module('timm_u1.finetune')
    assert old.FinetuneConfig is importlib.import_module('timm_u1.studies.frozen').FinetuneConfig
    sys.modules.pop('timm_u1.lite0', None)
    with pytest.warns(DeprecationWarning):
        split = importlib.import_module('timm_u1.lite0')
    from timm_u1.io.factory import create_model_from_spec

    assert split.create_model_from_spec is create_model_from_spec  # a module split in two still has both halves
    with pytest.raises(AttributeError, match='no attribute'):
        split.not_a_name


# modules that read argparse objects as data, not a command line: timm's train.py pickles its Namespace
# into every checkpoint, and reading one with weights_only=True must allow that class
ARGPARSE_AS_DATA = ('timm_u1.io.checkpoints',)


def test_argparse_is_imported_only_by_the_cli_package():
    users = sorted(_module_name(p) for p in PACKAGE.rglob('*.py') if 'argparse' in _imports(p))
    assert users, 'the CLI uses argparse'
    assert all(u.startswith('timm_u1.cli') or u in ARGPARSE_AS_DATA for u in users), users


def test_users_are_pointed_to_docs_in_the_repository():
    root = PACKAGE.parent
    for path in list(PACKAGE.rglob('*.py')) + list((root / 'model_cards').glob('*')):
        assert 'SPEC.md' not in path.read_text(encoding='utf-8'), f'{path} points to SPEC.md, which is not shipped'
    assert (root / 'docs' / 'math.md').is_file()


# A module is one concept and a function one step a reader can hold; past these sizes a file or function
# has grown a second concept. The limits are the "~500 lines / ~80 lines", with data.loading's
# source resolution (519 lines) the largest module today.
MODULE_LINES, FUNCTION_LINES = 530, 80


def test_modules_and_functions_stay_small():
    too_long = []
    for path in sorted(PACKAGE.rglob('*.py')):
        text = path.read_text(encoding='utf-8')
        if text.count('\n') > MODULE_LINES:
            too_long.append(f'{_module_name(path)}: {text.count(chr(10))} lines')
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    too_long.append(f'{_module_name(path)}.{node.name}: {length} lines')
    assert not too_long, f'split these by concept: {too_long}'
