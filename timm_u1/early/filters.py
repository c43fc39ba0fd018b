""" The first-layer filter analysis of a timm model (or dlib's face ResNet) with its controls and verdicts.

In a notebook::

    from timm_u1.early import analyze_filters
    report = analyze_filters('resnet18', out='runs/filters/resnet18')      # random init: no Hub here
    report = analyze_filters(weights='dlib-face', out='runs/filters/dlib')  # real pretrained 7x7 RGB filters
    report.verdicts['gabor']['verdict']

On the command line: ``timm-u1 filters --model M`` (:mod:`timm_u1.cli.filters`).

The analysed bank is the model's first conv (:func:`timm_u1.early.stems.first_conv`). Its controls:

* ``random_init``: the same architecture at its own random initialisation, ``seeds`` seeds
  (:func:`timm_u1.analysis.controls.random_init_copy`: timm's initialisation of the architecture; for
  dlib-face, a ``torch.nn.Conv2d`` of the same shape at PyTorch's default initialisation);
* ``pixel_shuffle``: each analysed filter with its pixel positions permuted (the same permutation
  for every channel of a filter, another for each filter and seed): the weight distribution kept,
  the spatial structure destroyed;
* ``step0``: for a trained run, the first conv of its step-0 weights (a model spec or a weights file).

Each bank is fitted by :func:`timm_u1.early.bank.fit_bank` and saved at once in ``out/fits/``; a
stopped analysis resumes from the banks already fitted with the same settings, and refuses those of
other settings (naming them) unless ``overwrite``. :func:`timm_u1.early.verdicts.verdicts` judges the
three claims; :func:`timm_u1.early.report.write_report` writes report.json, report.md and the PNGs.
"""
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..files import read_json, write_json
from ..runs import RunFolder, check_same_run
from ..version import __version__
from . import fits
from .fits import MAX_FILTERS
from .bank import BankFits, fit_bank
from .dlib_face import DLIB_FACE
from .stems import first_conv
from .verdicts import DECISION_RULE, verdicts

__all__ = ['FilterReport', 'analyze_filters', 'pixel_shuffle', 'load_step0', 'WEIGHTS', 'FITS_FORMAT']

_logger = logging.getLogger(__name__)
WEIGHTS = (DLIB_FACE,)  # real pretrained filters that are not a timm model
FITS_FORMAT = 'timm_u1.early.fits/1'
CONTROL_GROUPS = ('random_init', 'pixel_shuffle', 'step0')


@dataclass
class FilterReport:
    """What :func:`analyze_filters` returns: settings and provenance, every bank's fits, the verdicts, files."""
    meta: Dict[str, Any]
    banks: Dict[str, BankFits]
    groups: Dict[str, List[str]]  # control group -> its banks' names
    verdicts: Dict[str, Any]
    weight: Optional[np.ndarray] = field(default=None, repr=False)  # the analysed (N, C, H, W) filters
    paths: Dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {'meta': self.meta, 'verdicts': self.verdicts, 'groups': self.groups,
                'banks': {name: bank.to_dict() for name, bank in self.banks.items()}}

    def pooled(self) -> Dict[str, BankFits]:
        """Each control group's banks pooled into one (the units of the verdicts are filters)."""
        return {group: BankFits.pool([self.banks[name] for name in names]) for group, names in self.groups.items()}


def pixel_shuffle(weight: np.ndarray, seed: int) -> np.ndarray:
    """Each filter of a (N, C, H, W) bank with its H*W positions permuted, one permutation per filter
    applied to all its channels."""
    n, c, h, w = weight.shape
    rng = np.random.default_rng(seed)
    flat = weight.reshape(n, c, h * w)
    order = np.stack([rng.permutation(h * w) for _ in range(n)])
    return np.take_along_axis(flat, order[:, None, :], axis=2).reshape(weight.shape)


def _as_array(weight: Any) -> np.ndarray:
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().to('cpu', torch.float64).numpy()
    return np.asarray(weight, dtype=np.float64)


def _subject(model: Union[None, str, nn.Module], weights: Optional[str], pretrained: Optional[bool], seed: int):
    """(analysed weight, provenance, module whose random initialisation is the control, the stem's name)."""
    if weights is not None:
        if weights not in WEIGHTS:
            raise ValueError(f'--weights must be one of {list(WEIGHTS)}, got {weights!r}.')
        if model is not None:
            raise ValueError('give either a model (--model) or --weights, not both.')
        from .dlib_face import load_dlib_face

        conv = load_dlib_face()
        n, c, k, _ = conv.weight.shape
        stand_in = nn.Conv2d(c, n, k, stride=conv.stride)  # the same shape at PyTorch's default initialisation
        return _as_array(conv.weight), {'subject': DLIB_FACE, 'weights': 'pretrained (dlib, trained on faces)',
                                        'source': conv.source, 'first_conv': 'con_4 (the first layer)',
                                        'stride': list(conv.stride)}, stand_in, None
    if model is None:
        raise ValueError('give a model (--model M: a timm or u1_ name, hf-hub:, local-dir: or a folder) or '
                         f'--weights {DLIB_FACE}.')
    spec = None
    if isinstance(model, str):
        from ..io.factory import create_model_from_spec, default_pretrained

        spec = model
        loads = default_pretrained(spec) if pretrained is None else pretrained
        with torch.random.fork_rng(devices=[]):  # a randomly initialised subject is reproducible by --seed
            torch.manual_seed(seed)
            model = create_model_from_spec(spec, pretrained=pretrained)
        status = 'pretrained' if loads else f'random init (seed {seed})'
    else:
        status = 'as given'
    stem = first_conv(model)
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    arch = cfg.get('architecture') or type(model).__name__
    return _as_array(stem.weight), {
        'subject': spec or arch, 'architecture': arch, 'tag': cfg.get('tag'), 'weights': status,
        'source': f'{stem.name} of {spec or arch} ({status}), found by {stem.found_by}',
        'first_conv': stem.name, 'stride': list(stem.stride)}, model, stem.name


def load_step0(step0: Union[str, os.PathLike], stem_name: Optional[str], shape: Tuple[int, ...]) -> np.ndarray:
    """The first conv of a run's step-0 weights: a model spec (timm_u1 --model grammar), a safetensors
    file or a training ``checkpoint.pt`` (read with ``weights_only=True``)."""
    if stem_name is None:
        raise ValueError('--step0 needs a timm model as --model (dlib-face has no step-0 weights).')
    path = Path(os.fspath(step0)).expanduser()
    key = f'{stem_name}.weight'
    if path.suffix in ('.safetensors', '.pt', '.pth', '.bin') and not path.is_file():
        raise FileNotFoundError(f'--step0 {step0}: no such file; give the step-0 weights file or model folder.')
    if path.is_file():
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location='cpu', weights_only=True)
            state = state.get('model', state) if isinstance(state, dict) else state
        if not isinstance(state, dict) or key not in state:
            raise ValueError(f'--step0 {path} has no tensor {key!r}; give the step-0 checkpoint of the same architecture.')
        weight = state[key]
    else:
        from ..io.factory import create_model_from_spec

        weight = first_conv(create_model_from_spec(os.fspath(step0), pretrained=True)).weight
    weight = _as_array(weight)
    if weight.shape != tuple(shape):
        raise ValueError(f'--step0 {step0}: its first conv is {list(weight.shape)}, the analysed one '
                         f'{list(shape)}; give the step-0 weights of the same architecture.')
    return weight


def _random_init_weights(module: nn.Module, stem_name: Optional[str], seed: int) -> np.ndarray:
    from ..analysis.controls import random_init_copy

    fresh, _ = random_init_copy(module, seed)
    return _as_array(fresh.weight if stem_name is None else first_conv(fresh).weight)


def _bank_sources(weight, module, stem_name, step0_weight, seeds, seed) -> Dict[str, Any]:
    """name -> a function giving that bank's (N, C, H, W) weight, in fitting order."""
    sources: Dict[str, Any] = {'analysed': lambda: weight}
    for i in range(seeds):
        s = seed + 1 + i  # never the subject's own seed
        sources[f'random_init[seed={s}]'] = lambda s=s: _random_init_weights(module, stem_name, s)
        sources[f'pixel_shuffle[seed={s}]'] = lambda s=s: pixel_shuffle(weight, s)
    if step0_weight is not None:
        sources['step0'] = lambda: step0_weight
    return sources


def _cached_bank(path: Path, settings: Dict[str, Any], name: str) -> Optional[BankFits]:
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get('format') != FITS_FORMAT or data.get('bank') != name:
        raise ValueError(f'{path} is not the fits of bank {name!r} (format {FITS_FORMAT}); delete it to fit again.')
    check_same_run(data.get('settings'), settings, path, 'pass --overwrite, or choose another --out',
                   state='the fits of an earlier analysis')
    return BankFits.from_dict(data.get('fits'), str(path))


def _select(weight: np.ndarray, index: Optional[np.ndarray]) -> np.ndarray:
    return weight if index is None else weight[index]


def _settings(meta, weight, step0_weight, seeds, starts, max_filters, seed) -> Dict[str, Any]:
    """What a stored bank's fits depend on: a resumed analysis must have the same."""
    def digest(w: Optional[np.ndarray]) -> Optional[str]:
        return None if w is None else hashlib.sha256(np.ascontiguousarray(w, dtype=np.float64).tobytes()).hexdigest()

    return {'subject': meta['subject'], 'weights': meta['weights'], 'first_conv': meta['first_conv'],
            'weight_sha256': digest(weight), 'step0_sha256': digest(step0_weight), 'seeds': seeds, 'starts': starts,
            'max_filters': max_filters, 'seed': seed, 'timm_u1': __version__}


def _fit_banks(sources, index, settings, fits_dir: Optional[Path], overwrite: bool, starts: int,
               progress: bool) -> Dict[str, BankFits]:
    """Every bank fitted, or read back from ``fits_dir`` where an earlier run of the same settings left it."""
    if fits_dir is not None and overwrite and fits_dir.exists():
        shutil.rmtree(fits_dir)
    banks: Dict[str, BankFits] = {}
    for name, make in sources.items():
        path = fits_dir / f'{name}.json' if fits_dir is not None else None
        cached = _cached_bank(path, settings, name) if path is not None else None
        if cached is not None:
            _logger.info('resuming: %s fitted earlier (%s)', name, path)
            banks[name] = cached
            continue
        banks[name] = fit_bank(_select(make(), index), starts=starts, progress=progress, desc=f'fit {name}')
        if path is not None:
            write_json(path, {'format': FITS_FORMAT, 'bank': name, 'settings': settings, 'fits': banks[name].to_dict()})
    return banks


def analyze_filters(
        model: Union[None, str, nn.Module] = None,
        weights: Optional[str] = None,
        pretrained: Optional[bool] = None,
        step0: Union[None, str, os.PathLike] = None,
        seeds: int = 3,
        starts: int = fits.GABOR_STARTS,
        max_filters: Optional[int] = MAX_FILTERS,
        seed: int = 0,
        out: Union[None, str, os.PathLike] = None,
        overwrite: bool = False,
        progress: bool = True,
        plots: bool = True,
) -> FilterReport:
    """Fit the first conv of ``model`` (or ``weights='dlib-face'``) beside its controls and judge the claims.

    Args:
        model: A spec for :func:`timm_u1.io.factory.create_model_from_spec` (timm or ``u1_`` name,
            ``hf-hub:``, ``local-dir:``, a model folder) or a timm model.
        weights: ``'dlib-face'``: the 32 RGB 7x7 filters of dlib's face ResNet (needs ``timm_u1[dlib-face]``).
        pretrained: For a spec: load its weights (default as every command: True for hub / folders,
            False for plain timm names, which are then analysed at random initialisation, seeded by ``seed``).
        step0: The run's step-0 weights (model spec, safetensors file or training checkpoint.pt): one more control.
        seeds: Random-initialisation seeds and pixel-shuffle repeats (>= 1).
        starts: Gabor-fit starts per filter.
        max_filters: Analyse a seeded random subset of this many filters of a larger bank (the same
            filter indices in every bank); None: every filter.
        out: Folder for fits/, report.json, report.md and the PNGs (None: nothing written, no resume).
        overwrite: Fit afresh over fits of other settings in ``out`` (by default they are refused).
    """
    if seeds < 1 or starts < 1 or (max_filters is not None and max_filters < 1):
        raise ValueError(f'seeds, starts and max_filters must be >= 1, got {seeds}, {starts}, {max_filters}.')
    folder = RunFolder(out, '--out') if out is not None else None  # checked before any model is built
    if folder is not None:
        folder.acquire()  # a second analysis into the same folder is refused, not raced
    try:
        weight, meta, module, stem_name = _subject(model, weights, pretrained, seed)
        if weight.ndim != 4:
            raise ValueError(f'the first conv weight must be (filters, channels, kH, kW), got {list(weight.shape)}.')
        # read before any fitting: a bad --step0 fails at once, not after the other banks
        step0_weight = None if step0 is None else load_step0(step0, stem_name, weight.shape)
        index = None
        if max_filters is not None and weight.shape[0] > max_filters:
            index = np.sort(np.random.default_rng(seed).choice(weight.shape[0], max_filters, replace=False))
        settings = _settings(meta, weight, step0_weight, seeds, starts, max_filters, seed)
        meta.update(shape=list(weight.shape), filters_analysed=None if index is None else index.tolist(),
                    seeds=seeds, starts=starts, seed=seed, step0=None if step0 is None else os.fspath(step0),
                    timm_u1_version=__version__, decision_rule=DECISION_RULE)
        sources = _bank_sources(weight, module, stem_name, step0_weight, seeds, seed)
        banks = _fit_banks(sources, index, settings, folder.path / 'fits' if folder else None, overwrite, starts,
                           progress)
        groups = {g: [n for n in banks if n.split('[')[0] == g] for g in CONTROL_GROUPS}
        groups = {g: names for g, names in groups.items() if names}
        report = FilterReport(meta, banks, groups, {}, _select(weight, index))
        report.verdicts = verdicts(banks['analysed'], report.pooled())
        if folder is not None:
            from .report import write_report

            report.paths = write_report(report, folder.path, plots=plots)
        return report
    finally:
        if folder is not None:
            folder.release()
