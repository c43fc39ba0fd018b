""" Whether weights fit the model a config describes: checked before any tensor is copied, so nothing is
re-initialised in silence. """
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from torch import nn

from .config import WEIGHTS_NAME
from .errors import IntegrityError

__all__ = ['weights_shapes', 'classifier_keys', 'check_fit']


def weights_shapes(path: Path) -> Dict[str, Tuple[int, ...]]:
    """Tensor name -> shape from a safetensors file's header (no tensor data is read).

    ``safetensors.safe_open`` refuses a truncated, extended or malformed file.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework='pt') as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types (SafetensorError) for a malformed file
        raise IntegrityError(path.parent, {path.name: f'not a whole safetensors file ({e})'}) from e


def classifier_keys(model: nn.Module) -> List[str]:
    names = model.pretrained_cfg.get('classifier') or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return [f'{n}.{p}' for n in names for p in ('weight', 'bias')]


def _some(keys: Sequence[str]) -> str:
    return ', '.join(keys[:4]) + (f' (+{len(keys) - 4} more)' if len(keys) > 4 else '')


def check_fit(
        model: nn.Module, shapes: Mapping[str, Tuple[int, ...]], config: Mapping, where: str, skip: Sequence[str] = (),
        file: str = WEIGHTS_NAME,
) -> None:
    """Refuse weights (``shapes``, of ``file``) that do not fit ``model``, the model ``config`` describes;
    ``skip`` names tensors a new head replaces."""
    num_classes = config.get('num_classes')
    for key in classifier_keys(model):
        if key.endswith('.weight') and key in shapes and key not in skip and num_classes is not None \
                and shapes[key][0] != num_classes:
            raise ValueError(
                f'{where}: config.json says num_classes={num_classes} but the weights\' classifier ({key}) has '
                f'{shapes[key][0]} outputs. Fix num_classes in config.json (to {shapes[key][0]}), or pass '
                f'num_classes=N to load the backbone with a new N-class head.')
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in skip}
    found = {k: tuple(v) for k, v in shapes.items() if k not in skip}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f'{len(missing)} tensors missing ({_some(missing)})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected ({_some(unexpected)})')
        if wrong:
            parts.append('shapes differ: ' + '; '.join(
                f'{k} {found[k]} in the file, {expected[k]} in the model' for k in wrong[:3]))
        raise ValueError(
            f"{where}: {file} does not fit architecture '{config['architecture']}' of config.json: "
            f"{', '.join(parts)}. The config names another architecture than the weights were saved from.")
