"""The package uses the public APIs of its Hugging Face dependencies: no module imports or reaches a private
name (``_x``) of timm, huggingface_hub, accelerate or datasets."""
import ast
from pathlib import Path
from typing import Dict, List

import timm_u1

PACKAGE = Path(timm_u1.__file__).resolve().parent
DEPENDENCIES = ('timm', 'huggingface_hub', 'accelerate', 'datasets')


def _private(dotted: str) -> bool:
    parts = dotted.split('.')
    return parts[0] in DEPENDENCIES and any(p.startswith('_') and not p.startswith('__') for p in parts[1:])


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for an attribute chain rooted at a name, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ''
    return '.'.join([node.id, *reversed(parts)])


def private_uses(source: str) -> List[str]:
    """Every private name of a dependency that ``source`` imports or reaches through a module alias."""
    tree = ast.parse(source)
    aliases: Dict[str, str] = {}  # local name -> the dependency module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] in DEPENDENCIES:
                    aliases[alias.asname or alias.name.split('.')[0]] = alias.name if alias.asname else alias.name.split('.')[0]
                    if _private(alias.name):
                        found.append(alias.name)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for alias in node.names:
                full = f'{node.module}.{alias.name}'
                if node.module.split('.')[0] in DEPENDENCIES:
                    aliases[alias.asname or alias.name] = full
                    if _private(full):
                        found.append(full)
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:  # the whole chain, once
            dotted = _dotted(node)
            head, _, rest = dotted.partition('.')
            if head in aliases and rest and _private(f'{aliases[head]}.{rest}'):
                found.append(f'{aliases[head]}.{rest}')
    return sorted(set(found))


def test_the_checker_finds_each_kind_of_private_use():
    source = '\n'.join([
        'import huggingface_hub',
        'import timm.models as tm',
        'from timm.models._pretrained import PretrainedCfg',
        'from huggingface_hub.utils import _http',
        'import datasets._private_mod',
        'def f():',
        '    return huggingface_hub._tree_cache.read_tree_cache, tm._hub.load_model_config_from_path',
        'from timm.models import PretrainedCfg as Public',  # public: not reported
        'x = huggingface_hub.constants.ENDPOINT',  # public: not reported
        'obj._private_attribute_of_an_object',  # not a module path: not reported
    ])
    assert private_uses(source) == [
        'datasets._private_mod', 'huggingface_hub._tree_cache.read_tree_cache', 'huggingface_hub.utils._http',
        'timm.models._hub.load_model_config_from_path', 'timm.models._pretrained.PretrainedCfg']


def test_no_library_module_uses_a_private_name_of_a_dependency():
    offenders = {
        path.relative_to(PACKAGE.parent).as_posix(): uses
        for path in sorted(PACKAGE.rglob('*.py'))
        if (uses := private_uses(path.read_text(encoding='utf-8')))}
    assert not offenders, f'private names of dependencies used: {offenders}'
