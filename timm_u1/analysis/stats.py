"""Deprecated: the statistics moved to timm_u1.analysis.sombrero, .circular, .decoding and .signtest (until 0.3)."""
import importlib
import warnings

__all__ = []  # nothing new is defined here: every name is looked up where it lives now

# old name -> (module now holding it, its name there)
_MOVED = {
    'SombreroStatistics': ('sombrero', 'SombreroStatistics'),
    'AngleClassAccumulator': ('decoding', 'AngleClassAccumulator'),
    'rayleigh_test': ('circular', 'rayleigh_test'),
    'rayleigh_log10_p': ('circular', 'rayleigh_log10_p'),
    'RAYLEIGH_QUESTION': ('circular', 'RAYLEIGH_QUESTION'),
    'circular_summary': ('circular', 'circular_summary'),
    'class_statistic': ('circular', 'class_statistic'),
    'binomial_two_sided_p': ('signtest', 'sign_test_p'),
    'mcnemar_p': ('signtest', 'mcnemar_p'),
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    module, new = _MOVED[name]
    warnings.warn(f'timm_u1.analysis.stats.{name} moved to timm_u1.analysis.{module}.{new}; import it from there '
                  f'(the old path goes in timm_u1 0.3).', DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(f'{__package__}.{module}'), new)
