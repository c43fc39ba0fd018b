"""Early-layer symmetries (Bertoni et al., arXiv 2104.08537): fits of first-layer filters (:mod:`.fits`,
:mod:`.bank`), the first conv of any timm model and the stems of all of them (:mod:`.stems`), the real
pretrained filters of dlib's face ResNet (:mod:`.dlib_face`), and the filter analysis with its controls
(:mod:`.filters`), verdicts (:mod:`.verdicts`), report and plots. docs/filters.md says what each computes.
The architecture of the second half: the LGN pre-filter (:mod:`.lgn`), lateral propagation
(:mod:`.lateral`), both added to any timm stem (:mod:`.stem`: ``v1_<arch>``) or in the registered
``lgn_v1net_*`` (:mod:`.v1net`); docs/early.md.

The names below load on first use, so ``import timm_u1.early.fits`` (numpy and scipy only) does not
import torch, and the command line can read defaults without loading the analysis.
"""
import importlib
from typing import Any

_EXPORTS = {
    'BankFits': 'bank', 'fit_bank': 'bank', 'FilterReport': 'filters', 'analyze_filters': 'filters',
    'first_conv': 'stems', 'list_stems': 'stems', 'CLAIMS': 'verdicts', 'DECISION_RULE': 'verdicts',
    'verdicts': 'verdicts',
    'LGNPrefilter': 'lgn', 'LateralPropagation': 'lateral', 'filter_correlation_kernel': 'lateral',
    'connection_maps': 'lateral', 'add_v1_stem': 'stem', 'StemSettings': 'stem', 'V1Net': 'v1net',
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
