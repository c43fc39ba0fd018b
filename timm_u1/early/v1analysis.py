""" The V1 analysis of a trained model with the LGN pre-filter and lateral connections: what its pre-filter,
first-layer filters and lateral kernel became, each beside controls that could make the claim fail.

In a notebook::

    from timm_u1.early.v1analysis import analyze_v1
    report = analyze_v1('runs/v1/full-s0/run/export', step0='runs/v1/full-s0/step0', out='runs/v1/full-s0/lateral')
    report.verdicts['lateral_orientation']['verdict']

On the command line: ``timm-u1 lateral --model M --step0 S`` (:mod:`timm_u1.cli.lateral`). The model is a
registered ``lgn_v1net_*`` or any ``v1_<arch>`` (a timm model with :func:`timm_u1.early.stem.add_v1_stem`).

* l0: its LoG fit, radial-symmetry index and rot90 correlation, beside its pixels shuffled and the
  step-0 filter (:func:`l0_analysis`);
* l1: the filter analysis of :func:`timm_u1.early.filters.analyze_filters` (Gabor, LoG and orientation fits
  beside random-init, pixel-shuffle and step-0 controls), written to ``out/filters``;
* the lateral kernel, as connection maps (:func:`timm_u1.early.lateral.connection_maps`) among the
  oriented filters: orientation selectivity, co-axiality, association field against co-circularity
  and kernel correlation with the direction process (:mod:`timm_u1.early.connectivity`), for the
  trained kernel, the step-0 kernel and the parameter-free filter-correlation kernel of the trained
  filters, all read with the trained filters' orientations.
"""
import contextlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..runs import RunFolder
from ..version import __version__
from . import connectivity, fits
from .bank import BankFits
from .lateral import LateralPropagation, connection_maps, filter_correlation_kernel
from .lgn import LGNPrefilter
from .stem import find_v1_stem
from .verdicts import OSI_MIN
from .v1verdicts import (
    MIN_ORIENTED, V1_DECISION_RULE, association_verdict, l0_verdict, not_evaluated, selectivity_verdict,
)

__all__ = ['V1Parts', 'V1Report', 'v1_parts', 'l0_analysis', 'orientation_labels', 'kernel_analysis', 'analyze_v1']

_logger = logging.getLogger(__name__)


@dataclass
class V1Parts:
    """The V1 pieces of a model: the pre-filter (or None), the feed-forward conv weight (N, C, k, k) and its
    stride, and the lateral module (or None)."""
    prefilter: Optional[LGNPrefilter]
    ff_weight: torch.Tensor
    stride: Tuple[int, int]
    lateral: Optional[LateralPropagation]
    where: str


def v1_parts(model: nn.Module) -> V1Parts:
    """The pieces of an ``lgn_v1net_*`` (``lgn``, ``v1.conv``, ``v1.lateral``) or a model with a V1 stem."""
    v1 = getattr(model, 'v1', None)
    if v1 is not None and isinstance(getattr(v1, 'lateral', None), LateralPropagation):
        lgn = getattr(model, 'lgn', None)
        return V1Parts(lgn if isinstance(lgn, LGNPrefilter) else None, v1.conv.weight.detach(),
                       tuple(v1.conv.stride), v1.lateral, 'lgn / v1.conv / v1.lateral')
    name, stem = find_v1_stem(model)
    return V1Parts(stem.prefilter, stem.weight.detach(), tuple(stem.stride), stem.lateral,
                   f'{name}.prefilter / {name} / {name}.lateral')


def _number(x: float) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else float(x)


def l0_analysis(f: np.ndarray, shuffles: int = 200, seed: int = 0) -> Dict[str, Any]:
    """LoG fit, RSI about the fit's centre and rot90 correlation of a pre-filter, and the RSI of its pixels
    shuffled ``shuffles`` times (mean and the one-sided p of the observed RSI being that high)."""
    f = np.asarray(f, float)
    log = fits.fit_log(f)
    rsi = _number(fits.radial_symmetry_index(f, (log.x0, log.y0)))
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(shuffles):
        g = rng.permutation(f.ravel()).reshape(f.shape)
        fit = fits.fit_log(g)
        null.append(fits.radial_symmetry_index(g, (fit.x0, fit.y0)))
    null = np.asarray([v for v in null if math.isfinite(v)])
    p = float((np.sum(null >= rsi) + 1) / (len(null) + 1)) if rsi is not None and len(null) else None
    return {'filter': f.tolist(), 'log': {k: _number(v) for k, v in log.to_dict().items()}, 'rsi': rsi,
            'rot90': _number(fits.rot90_correlation(f)) if f.shape[0] == f.shape[1] else None,
            'rsi_shuffle_mean': float(null.mean()) if len(null) else None, 'rsi_shuffle_p': p, 'shuffles': len(null)}


def orientation_labels(bank: BankFits) -> Tuple[np.ndarray, np.ndarray, str]:
    """(edge orientation of every filter, indices of the oriented ones, where the orientations come from):
    the Gabor-like filters with OSI >= OSI_MIN at their Gabor fit's edge orientation; where fewer than
    MIN_ORIENTED are Gabor-like, every filter with OSI >= OSI_MIN at its spectral edge orientation."""
    records = bank.records
    gabor = [i for i, r in enumerate(records) if r['class'] == 'gabor-like' and (r['osi'] or 0) >= OSI_MIN]
    if len(gabor) >= MIN_ORIENTED:
        theta = np.array([(r['gabor'] or {}).get('edge_theta') or 0.0 for r in records], float)
        return theta, np.array(gabor), 'Gabor fit (Gabor-like filters with OSI >= %g)' % OSI_MIN
    spectral = [i for i, r in enumerate(records) if (r['osi'] or 0) >= OSI_MIN and r['edge_theta'] is not None]
    theta = np.array([r['edge_theta'] if r['edge_theta'] is not None else 0.0 for r in records], float)
    return theta, np.array(spectral, dtype=int), 'spectral orientation index (filters with OSI >= %g)' % OSI_MIN


def kernel_analysis(maps: np.ndarray, theta: np.ndarray, models: Dict[Tuple[float, float], np.ndarray],
                    permutations: int, shuffles: int, seed: int) -> Dict[str, Any]:
    """Every connectivity statistic of one kernel's connection maps among the oriented filters."""
    return {
        'selectivity': connectivity.orientation_selectivity(maps, theta, permutations, seed),
        'co_axiality': connectivity.co_axiality(maps, theta),
        'association': {'error': connectivity.association_error(maps, theta, shuffles, seed),
                        'correlation': connectivity.kernel_correlation(maps, theta, models, min(shuffles, 200),
                                                                       200, seed)},
    }


@dataclass
class V1Report:
    """What :func:`analyze_v1` returns: settings, the l0 and kernel analyses, the filter report, verdicts, files."""
    meta: Dict[str, Any]
    l0: Dict[str, Any]
    kernels: Dict[str, Any]
    filters: Any  # timm_u1.early.filters.FilterReport
    verdicts: Dict[str, Any]
    arrays: Dict[str, Any] = field(default_factory=dict, repr=False)  # what the figures draw (not in report.json)
    paths: Dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {'meta': self.meta, 'decision_rule': V1_DECISION_RULE, 'verdicts': self.verdicts, 'l0': self.l0,
                'kernels': self.kernels, 'filter_verdicts': self.filters.verdicts if self.filters else None}


def _load(model: Union[str, nn.Module]) -> Tuple[nn.Module, str]:
    if isinstance(model, nn.Module):
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        return model, cfg.get('architecture') or type(model).__name__
    from ..io.factory import create_model_from_spec

    return create_model_from_spec(os.fspath(model)), os.fspath(model)


def _maps(kernel: torch.Tensor, keep: np.ndarray) -> np.ndarray:
    maps = connection_maps(kernel.detach().to('cpu', torch.float64)).numpy()
    return maps[np.ix_(keep, keep)]


def _kernels(parts: V1Parts, step0_parts: Optional[V1Parts]) -> Dict[str, torch.Tensor]:
    """name -> kernel (conv layout) of the trained model, its step 0 and the filter-correlation reference."""
    lateral = parts.lateral
    if lateral is None or lateral.steps == 0:
        return {}
    out = {'trained': lateral.kernel(parts.ff_weight).detach()}
    if step0_parts is not None and step0_parts.lateral is not None and step0_parts.lateral.steps:
        out['step0'] = step0_parts.lateral.kernel(step0_parts.ff_weight).detach()
    if lateral.kernel_mode == 'learned':  # else the trained kernel is this reference already
        out['filter_correlation'] = filter_correlation_kernel(parts.ff_weight, lateral.kernel_size, parts.stride)
    return out


def _lateral(parts: V1Parts, step0_parts: Optional[V1Parts], bank: BankFits, permutations: int, shuffles: int,
             seed: int, progress: bool) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """(kernel analyses, their verdicts, the arrays the figures draw: orientations, maps, model kernels)."""
    kernels = _kernels(parts, step0_parts)
    if not kernels:
        reason = 'the model has no lateral kernel (lateral_steps = 0)'
        return {}, {'lateral_orientation': not_evaluated('lateral_orientation', reason),
                    'association': not_evaluated('association', reason)}, {}
    theta, keep, source = orientation_labels(bank)
    meta = {'oriented_filters': keep.tolist(), 'orientation_source': source, 'theta': theta.tolist()}
    if len(keep) < MIN_ORIENTED:
        reason = f'{len(keep)} oriented filters (< {MIN_ORIENTED})'
        return {'meta': meta}, {'lateral_orientation': not_evaluated('lateral_orientation', reason),
                                'association': not_evaluated('association', reason)}, {}
    k = next(iter(kernels.values())).shape[-1]
    from tqdm.auto import tqdm

    models = {}
    for sigma in tqdm(connectivity.SIGMAS, desc='direction-process kernels', disable=not progress, leave=False):
        for lam, gamma in connectivity.direction_process_kernel(k, sigma, seed=seed).items():
            models[(sigma, lam)] = gamma
    results: Dict[str, Any] = {'meta': meta}
    arrays: Dict[str, Any] = {'theta': theta[keep], 'maps': {}, 'models': models}
    for name in tqdm(list(kernels), desc='lateral kernels', disable=not progress, leave=False):
        arrays['maps'][name] = _maps(kernels[name], keep)
        results[name] = kernel_analysis(arrays['maps'][name], theta[keep], models, permutations, shuffles, seed)
    step0, ref = results.get('step0'), results.get('filter_correlation')
    verdicts = {
        'lateral_orientation': selectivity_verdict(results['trained']['selectivity'],
                                                   step0 and step0['selectivity'], ref and ref['selectivity']),
        'association': association_verdict(results['trained']['association'], step0 and step0['association'],
                                           ref and ref['association']),
    }
    return results, verdicts, arrays


def _analyze(model, step0, out: Optional[Path], seeds: int, starts: int, permutations: int, shuffles: int,
             seed: int, overwrite: bool, progress: bool, plots: bool) -> V1Report:
    from .filters import analyze_filters

    subject, name = _load(model)
    parts = v1_parts(subject)
    step0_model, step0_name = _load(step0) if step0 is not None else (None, None)
    step0_parts = v1_parts(step0_model) if step0_model is not None else None
    if step0_parts is not None and step0_parts.ff_weight.shape != parts.ff_weight.shape:
        raise ValueError(f'--step0 {step0}: its first-layer filters are {list(step0_parts.ff_weight.shape)}, the '
                         f'model\'s {list(parts.ff_weight.shape)}; give the step-0 weights of the same run.')
    with tempfile.TemporaryDirectory() as tmp:
        step0_spec = step0
        if isinstance(step0, nn.Module):  # the filter analysis reads step-0 weights from a file or a spec
            from safetensors.torch import save_file

            step0_spec = Path(tmp) / 'step0.safetensors'
            save_file({k: v.contiguous() for k, v in step0.state_dict().items()}, str(step0_spec))
        filters = analyze_filters(subject, step0=step0_spec, seeds=seeds, starts=starts, max_filters=None, seed=seed,
                                  out=out / 'filters' if out else None, overwrite=overwrite, progress=progress,
                                  plots=plots)
    l0: Dict[str, Any] = {}
    if parts.prefilter is not None:
        l0['trained'] = l0_analysis(parts.prefilter.filters()[0].numpy(), min(shuffles, 200), seed)
        if step0_parts is not None and step0_parts.prefilter is not None:
            l0['step0'] = l0_analysis(step0_parts.prefilter.filters()[0].numpy(), min(shuffles, 200), seed)
    kernels, lateral_verdicts, arrays = _lateral(parts, step0_parts, filters.banks['analysed'], permutations, shuffles,
                                         seed, progress)
    verdicts = {'l0': l0_verdict(l0.get('trained'), l0.get('step0')), **lateral_verdicts,
                'gabor': filters.verdicts['gabor'], 'orientation': filters.verdicts['orientation']}
    meta = {'subject': name, 'parts': parts.where, 'step0': step0_name,
            'filters': list(parts.ff_weight.shape), 'lateral': None if parts.lateral is None else {
                'steps': parts.lateral.steps, 'kernel_size': parts.lateral.kernel_size,
                'rule': parts.lateral.rule, 'kernel': parts.lateral.kernel_mode},
            'seeds': seeds, 'starts': starts, 'permutations': permutations, 'shuffles': shuffles, 'seed': seed,
            'timm_u1_version': __version__}
    report = V1Report(meta, l0, kernels, filters, verdicts, arrays)
    if out is not None:
        from .v1report import write_v1_report

        report.paths = write_v1_report(report, out, plots=plots)
    return report


def analyze_v1(
        model: Union[str, nn.Module],
        step0: Union[None, str, os.PathLike] = None,
        out: Union[None, str, os.PathLike] = None,
        seeds: int = 3,
        starts: int = fits.GABOR_STARTS,
        permutations: int = 10000,
        shuffles: int = 1000,
        seed: int = 0,
        overwrite: bool = False,
        progress: bool = True,
        plots: bool = True,
) -> V1Report:
    """Analyse the pre-filter, first-layer filters and lateral kernel of ``model`` (a spec or a module).

    Args:
        step0: The run's step-0 weights as a model spec (e.g. the folder ``save_pretrained`` wrote before
            training): the step-0 control of every claim.
        seeds: Random-initialisation seeds and pixel-shuffle repeats of the filter analysis.
        starts: Gabor-fit starts per filter.
        permutations: Orientation permutations of the selectivity test.
        shuffles: Orientation shuffles of the association null (the kernel correlation uses at most 200) and
            pixel shuffles of the l0 null (at most 200).
        out: Folder for report.json, report.md, the PNGs and ``filters/`` (the filter analysis, which resumes).
    """
    if permutations < 1 or shuffles < 1:
        raise ValueError(f'permutations and shuffles must be >= 1, got {permutations} and {shuffles}.')
    folder = RunFolder(out, '--output') if out is not None else None  # checked before a model is built
    with folder if folder is not None else contextlib.nullcontext():
        report = _analyze(model, step0, folder.path if folder else None, seeds, starts, permutations, shuffles,
                          seed, overwrite, progress, plots)
    return report
