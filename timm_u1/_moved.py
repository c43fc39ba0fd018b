"""The module paths of timm_u1 0.1 (one flat module per concept), kept importable for one release.

``import timm_u1.analyze`` still works and gives :mod:`timm_u1.analysis.analyzer` itself, with a
``DeprecationWarning`` naming the new path. Pickles that name an old path (a ``torch.save``-d twin is
``timm_u1.u1.U1ResNet``) load through the same alias. Remove in timm_u1 0.3.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

__all__ = ['MOVED', 'install']

# old module -> the module now holding it, or the modules it was split into (searched in order)
MOVED = {
    'timm_u1.hue': 'timm_u1.core.hue',
    'timm_u1.loss': 'timm_u1.core.loss',
    'timm_u1.u1': 'timm_u1.core.u1',
    'timm_u1.knn': 'timm_u1.core.knn',
    'timm_u1.lite0': ('timm_u1.core.lite0', 'timm_u1.io.factory'),
    'timm_u1._files': 'timm_u1.files',
    'timm_u1.hub': ('timm_u1.io.save', 'timm_u1.io.load', 'timm_u1.io.config', 'timm_u1.io.fit', 'timm_u1.io.cards',
                    'timm_u1.io.download', 'timm_u1.io.push', 'timm_u1.io.verify', 'timm_u1.io.limits',
                    'timm_u1.io.errors', 'timm_u1.io.specs'),
    # split in this release: one module per concept
    'timm_u1.io.hub': ('timm_u1.io.download', 'timm_u1.io.push', 'timm_u1.io.verify', 'timm_u1.io.limits',
                       'timm_u1.io.errors'),
    'timm_u1.io.serialization': ('timm_u1.io.save', 'timm_u1.io.load', 'timm_u1.io.config', 'timm_u1.io.fit',
                                 'timm_u1.io.cards', 'timm_u1.io.errors'),
    'timm_u1.cards': 'timm_u1.io.cards',
    'timm_u1.identity': ('timm_u1.runs.identity', 'timm_u1.runs.folder'),
    'timm_u1.shard': 'timm_u1.runs.shard',
    'timm_u1.probe': 'timm_u1.analysis.probe',
    'timm_u1.stats': 'timm_u1.analysis.stats',
    'timm_u1.controls': 'timm_u1.analysis.controls',
    'timm_u1.analyze': 'timm_u1.analysis.analyzer',
    'timm_u1.plots': ('timm_u1.analysis.plots', 'timm_u1.memory.plots', 'timm_u1.training.plots',
                      'timm_u1.studies.plots'),
    'timm_u1.baselines': 'timm_u1.memory.baselines',
    'timm_u1.study': ('timm_u1.studies.scratch', 'timm_u1.data.builtin'),
    'timm_u1.finetune': 'timm_u1.studies.frozen',
    'timm_u1.paired': 'timm_u1.studies.paired',
    # the trainer of the first sorted layout, one concept per module since
    'timm_u1.training.trainer': ('timm_u1.training.loop', 'timm_u1.training.config', 'timm_u1.training.checkpoint',
                                 'timm_u1.training.metrics', 'timm_u1.training.evaluate', 'timm_u1.training.inputs',
                                 'timm_u1.training.export', 'timm_u1.training.model', 'timm_u1.training.launch'),
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as the module now holding its code."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        names = new if isinstance(new, tuple) else (new,)
        warnings.warn(f'{spec.name} moved to {" and ".join(names)}; import it from there (the old path goes in '
                      f'timm_u1 0.3).', DeprecationWarning, stacklevel=3)
        if len(names) == 1:
            return importlib.import_module(new)
        modules = [importlib.import_module(n) for n in names]
        merged = types.ModuleType(spec.name, f'Deprecated alias of {", ".join(names)}.')

        def __getattr__(attr):
            for module in modules:
                if hasattr(module, attr):
                    return getattr(module, attr)
            raise AttributeError(f'module {spec.name!r} has no attribute {attr!r}')
        merged.__getattr__ = __getattr__
        return merged

    def exec_module(self, module):
        pass  # the module object is the new one, already executed


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
