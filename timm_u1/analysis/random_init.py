"""Random-initialisation controls: a copy of a model's architecture with random weights, and its BatchNorm
statistics recalibrated on the analysed images (at default statistics a random network is half dead)."""
import copy
import logging
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch
from torch import nn

from .probe import ActivationProbe

__all__ = ['random_init_copy', 'recalibrate_batchnorm']

_logger = logging.getLogger(__name__)


def random_init_copy(model: nn.Module, seed: int) -> Tuple[nn.Module, str]:
    """A copy of ``model``'s architecture with random weights; returns (model, how it was initialised).

    The architecture is re-created with timm (its own initialisation) when its state dict has the
    same keys and shapes; otherwise a deep copy gets every module's ``reset_parameters``.
    """
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    arch = cfg.get('architecture')
    reference = {k: v.shape for k, v in model.state_dict().items()}
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        return _random_init(model, arch, cfg, reference)


def _random_init(model: nn.Module, arch: Optional[str], cfg: Dict[str, Any], reference: Dict[str, Any]):
    import timm

    if arch:
        try:
            fresh = timm.create_model(arch, pretrained=False, num_classes=getattr(model, 'num_classes', 1000))
            if {k: v.shape for k, v in fresh.state_dict().items()} == reference:
                fresh.pretrained_cfg = cfg
                return fresh.eval(), 'timm initialisation'
        except Exception as e:  # an architecture timm cannot re-create by name: fall back below
            _logger.info('timm cannot re-create %r (%s); resetting a copy of the model instead', arch, e)
    fresh = copy.deepcopy(model)
    for module in fresh.modules():
        if hasattr(module, 'reset_parameters'):
            module.reset_parameters()
    return fresh.eval(), 'PyTorch default initialisation'


def _batchnorms(model: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    # _BatchNorm is torch's public base of BatchNorm1d/2d/3d and SyncBatchNorm (update_bn tests it too)
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _UpToLayer(nn.Module):
    """The model run up to the probed layer, for ``update_bn``: its ``train()`` switches the BatchNorms only.

    ``update_bn`` puts the whole model in training mode; dropout and drop-path would then change the
    activations the statistics are estimated from, and no map of the analysis is taken in that mode.
    """

    def __init__(self, model: nn.Module, probe: ActivationProbe):
        super().__init__()
        self.model = model
        self.probe = probe
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(x)

    def train(self, mode: bool = True) -> '_UpToLayer':
        self.training = mode
        for m in _batchnorms(self.model):
            m.train(mode)
        return self


@torch.no_grad()
def recalibrate_batchnorm(
        model: nn.Module, batches: Iterable, layer: Optional[str] = None, max_images: Optional[int] = None,
        device: Union[str, torch.device] = 'cpu') -> int:
    """Re-estimate every BatchNorm's running mean and variance on ``batches`` (a cumulative average).

    ``torch.optim.swa_utils.update_bn`` does the estimate; what differs: the model runs only up to
    ``layer`` (later BatchNorms do not touch the probed map), only the BatchNorms are put in training
    mode, and at most ``max_images`` images are used. Returns the number of images used; 0 if the
    model has no BatchNorm.
    """
    from torch.optim.swa_utils import update_bn

    if not _batchnorms(model):
        return 0
    model.eval()
    used = [0]

    def first_images() -> Iterator[torch.Tensor]:
        for images, *_ in batches:
            if max_images is not None and used[0] >= max_images:
                return
            if max_images is not None:
                images = images[:max_images - used[0]]
            used[0] += len(images)
            yield images

    with ActivationProbe(model, layer) as probe:
        try:
            update_bn(first_images(), _UpToLayer(model, probe), device=device)
        finally:
            model.eval()
    return used[0]
