"""The U(1) hue loss inside timm's own ``train.py``, with every timm recipe flag.

timm's ``train.py`` builds its loss from fixed flags (``--smoothing``, ``--mixup``, ``--bce-loss``, ...)
and hands it to a ``timm.task`` task as ``criterion``. :class:`TimmTrainScript` loads that script as a
module without running it, adds options to its parser, and, once the options are parsed, replaces the
task classes it imported from ``timm.task`` by ones whose criterion is a :class:`~timm_u1.core.loss.U1Loss`
computing the same cross-entropy (hard, label-smoothed or mixup / cutmix targets) plus the hue term.
The rest of the script runs as written: EMA, RandAugment, random erasing, layer decay, drop-path,
``--torchcompile``, checkpoint history, torchrun. ``timm-u1 timm-train`` is the command line of this.
"""
import functools
import logging
import runpy
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
from torch import nn
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.task import ClassificationTask, TrainingTask

from ..core.loss import U1Loss
from ..core.u1 import U1Config, U1Output, is_u1_model
from ..files import file_sha256

__all__ = ['TESTED_TRAIN_PY', 'TimmTrainScript', 'U1ClassificationTask', 'u1_criterion', 'u1_task', 'train_spatially']

_logger = logging.getLogger(__name__)

# SHA-256 of the train.py files this module is tested with, and where each comes from
TESTED_TRAIN_PY = {
    'f0bb70b9e1c8c576eb1f7beba9cb46953d01ec1308d68c59ec055a6266f76388':
        'huggingface/pytorch-image-models@aa4b5850 (main of 2026-08-08), run with timm 1.0.31',
}

# what to drop when train.py chose a loss that is not softmax cross-entropy
_NOT_CROSS_ENTROPY = {'BinaryCrossEntropy': '--bce-loss', 'JsdCrossEntropy': '--jsd-loss'}


def u1_criterion(criterion: Union[nn.Module, Callable], u1: U1Config) -> U1Loss:
    """The :class:`U1Loss` whose cross-entropy is ``criterion``'s, plus ``u1.hue_weight`` x the hue loss.

    ``criterion`` is the loss timm's train.py chose: ``SoftTargetCrossEntropy`` (mixup / cutmix, whose
    targets carry the label smoothing), ``LabelSmoothingCrossEntropy`` or ``nn.CrossEntropyLoss``.
    Other losses (binary cross-entropy, JSD) are refused: the hue term extends softmax cross-entropy.
    """
    if isinstance(criterion, U1Loss):
        return criterion
    if isinstance(criterion, SoftTargetCrossEntropy):
        smoothing = 0.0
    elif isinstance(criterion, LabelSmoothingCrossEntropy):
        smoothing = criterion.smoothing
    elif type(criterion) is nn.CrossEntropyLoss:
        if criterion.weight is not None or criterion.reduction != 'mean':
            raise ValueError(
                'U1Loss computes the unweighted mean cross-entropy; this nn.CrossEntropyLoss has class weight '
                f'{criterion.weight is not None} and reduction {criterion.reduction!r}: train without them.')
        smoothing = criterion.label_smoothing
    else:
        name = type(criterion).__name__
        flag = _NOT_CROSS_ENTROPY.get(name)
        raise ValueError(
            f'U1Loss adds the hue term to softmax cross-entropy, and train.py chose {name}'
            f'{f" ({flag})" if flag else ""}; train without {flag or "that loss"} to use the hue loss.')
    return U1Loss(hue_weight=u1.hue_weight, smoothing=smoothing, hue_input=u1.hue_input, spatial=u1.spatial,
                  eps=u1.eps)


class _SpatialTraining:
    """While training, ``forward`` is ``forward_u1(x, spatial=True)``: the spatial hue loss needs the
    per-location logits and the energy map. In eval mode it is the plain forward, so validation, EMA
    and checkpoints see the model as it is. Being the model's own forward, it runs inside DDP and
    torch.compile; the parameter names stay the model's (layer decay's group matcher needs them)."""

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, U1Output]:
        if self.training:
            return self.forward_u1(x, spatial=True)
        return super().forward(x)


_SPATIAL_CLASSES: Dict[type, type] = {}


def train_spatially(model: nn.Module) -> nn.Module:
    """Make a ``u1_`` twin return its :class:`U1Output` (with spatial logits) from ``forward`` while training."""
    if not is_u1_model(model):
        name = getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__
        raise ValueError(
            f'--spatial needs a u1_ twin (it calls forward_u1), and the model is a plain {name}: '
            f'pass --model u1_{name}.')
    base = type(model)
    if not issubclass(base, _SpatialTraining):
        cls = _SPATIAL_CLASSES.get(base)
        if cls is None:
            cls = _SPATIAL_CLASSES[base] = type(f'SpatiallyTrained{base.__name__}', (_SpatialTraining, base), {})
        model.__class__ = cls  # as the twins themselves are made (timm_u1.core.u1)
    return model


class U1ClassificationTask(ClassificationTask):
    """timm's ``ClassificationTask`` with :func:`u1_criterion` of its criterion: CE + lambda x hue.

    Args:
        model: the model to train (a ``u1_`` twin for ``u1.spatial``).
        criterion: the loss train.py chose; made a :class:`U1Loss` with the same cross-entropy.
        u1: the hue settings (weight, input, spatial).
        **kwargs: the rest of ``ClassificationTask``'s arguments (device, dtype, verbose, ...).
    """

    def __init__(
            self,
            model: nn.Module,
            criterion: Optional[Union[nn.Module, Callable]] = None,
            u1: Optional[U1Config] = None,
            verbose: bool = True,
            **kwargs: Any,
    ):
        super().__init__(model, criterion, verbose=False, **kwargs)
        self.verbose = verbose
        self.u1 = u1 or U1Config()
        self.criterion = u1_criterion(self.criterion, self.u1)
        if self.u1.spatial:
            train_spatially(model)
        if verbose:
            _logger.info('%s: criterion=%r', type(self).__name__, self.criterion)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The loss, its two terms (detached, for logging) and the logits."""
        output = self.trainable_module(input)
        parts = self.criterion.parts(output, target)
        logits = output.logits if isinstance(output, U1Output) else output
        return {'loss': parts.total, 'output': logits, 'ce': parts.ce.detach(), 'hue': parts.hue.detach()}


def u1_task(task_cls: type, u1: U1Config) -> Callable[..., TrainingTask]:
    """What train.py calls instead of ``task_cls``: the same task, its ``criterion`` a :class:`U1Loss`."""
    if task_cls is ClassificationTask:
        return functools.partial(U1ClassificationTask, u1=u1)

    @functools.wraps(task_cls)
    def build(*args: Any, **kwargs: Any) -> TrainingTask:
        if u1.spatial:
            raise ValueError(
                f'--spatial trains a ClassificationTask, and train.py builds a {task_cls.__name__} '
                f'(e.g. for --kd-model-name): drop --spatial, or the option that chose {task_cls.__name__}.')
        task = task_cls(*args, **kwargs)
        if not hasattr(task, 'criterion'):
            raise ValueError(f'{task_cls.__name__} has no criterion to give the hue loss; train without it.')
        task.criterion = u1_criterion(task.criterion, u1)
        _logger.info('%s: criterion=%r', task_cls.__name__, task.criterion)
        return task
    return build


class TimmTrainScript:
    """timm's ``train.py`` loaded as a module (its ``main()`` not run yet).

    Args:
        path: train.py of huggingface/pytorch-image-models (``timm``'s wheel does not ship it).
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f'no train.py at {str(self.path)!r}: pass the train.py of a clone of '
                f'huggingface/pytorch-image-models (docs/training.md names the tested commit).')
        self.sha256 = file_sha256(self.path)
        # runpy runs the script's top level (imports, its argument parser) but not its
        # `if __name__ == '__main__': main()`; run_path returns a copy of the module's globals,
        # and main() reads the live ones, its __globals__
        loaded = runpy.run_path(str(self.path), run_name='timm_train_py')
        main, parser = loaded.get('main'), loaded.get('parser')
        if not callable(main) or not hasattr(parser, 'parse_args') or not hasattr(parser, 'add_argument_group'):
            raise ValueError(
                f'{self.path} has no main() and module-level argument parser `parser`; pass the train.py of '
                f'huggingface/pytorch-image-models.')
        self.namespace: Dict[str, Any] = main.__globals__
        self.parser = parser
        self.task_classes = {name: obj for name, obj in self.namespace.items()
                             if isinstance(obj, type) and issubclass(obj, TrainingTask)}
        if not self.task_classes:
            raise ValueError(
                f'{self.path} imports no task class from timm.task, where the hue loss goes in: use the '
                f'train.py of timm 1.0.23 or later (docs/training.md names the tested commit).')

    @property
    def tested(self) -> Optional[str]:
        """Where this train.py comes from, if it is one this module is tested with; else None."""
        return TESTED_TRAIN_PY.get(self.sha256)

    def use_u1_loss(self, u1_of: Callable[[Any], U1Config]) -> None:
        """Build every task with a :class:`U1Loss` whose settings ``u1_of(parsed arguments)`` gives.

        The settings are read when train.py parses its arguments (a ``--config`` YAML file included),
        and recorded in its ``args.yaml`` and checkpoints with every other option.
        """
        parse_args = self.parser.parse_args

        def parse_with_u1(args: Optional[Sequence[str]] = None, namespace: Any = None) -> Any:
            parsed = parse_args(args, namespace)
            u1 = u1_of(parsed)
            for name, task_cls in self.task_classes.items():
                self.namespace[name] = u1_task(task_cls, u1)
            return parsed

        # train.py's _parse_args calls parser.parse_args(remaining): the instance attribute shadows the method
        self.parser.parse_args = parse_with_u1

    def run(self, argv: Sequence[str]) -> None:
        """Run train.py's ``main()`` with ``argv`` as its command line."""
        if self.tested is None:
            _logger.warning(
                '%s (sha256 %s) is not a train.py timm_u1 is tested with (%s); the hue loss goes in '
                'where timm.task tasks take their criterion.', self.path, self.sha256[:12],
                '; '.join(TESTED_TRAIN_PY.values()))
        saved = sys.argv
        sys.argv = [str(self.path), *argv]  # train.py parses sys.argv itself
        try:
            self.namespace['main']()
        finally:
            sys.argv = saved
