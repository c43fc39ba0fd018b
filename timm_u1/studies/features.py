""" What a frozen backbone computes, once per dataset: its feature map, or its last block's input, cached.

* ``'head'`` (:func:`extract_feature_maps`): the ``forward_features`` map (for timm's EfficientNet
  the output of ``conv_head`` + ``bn2`` + activation, 1280 channels, 3x3 at 96 px).
* ``'last-block'`` (:func:`extract_block_inputs`): the INPUT of the backbone's last block
  (:func:`last_block`: ``blocks[-1][-1]`` of timm's EfficientNet, ``layer4[-1]`` of its ResNet);
  a trainable copy of that block and what follows it (:func:`trainable_last_block`) reproduces
  ``forward_features`` from it exactly.

:func:`cached_features` keeps them in ``OUTPUT/features`` as safetensors, keyed by the backbone's
weights (:func:`timm_u1.runs.backbone_fingerprint`), not by its name: new weights at the same
``--model`` path are a new cache.
"""
import copy
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..files import atomic_path
from ..runs.identity import backbone_fingerprint

__all__ = ['CACHED', 'preprocess', 'extract_feature_maps', 'last_block', 'LastBlock', 'trainable_last_block',
           'extract_block_inputs', 'create_backbone', 'load_source', 'read_cached_features', 'cached_features']

_logger = logging.getLogger(__name__)

# what the feature cache holds for each part a study trains (in its file name and metadata)
CACHED = {'head': 'forward_features', 'last-block': 'last_block_input'}


def preprocess(images: Sequence[Any], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """PIL images -> normalised (B, 3, size, size) float32: timm's eval transform, squashed to the size
    (RGB, bicubic resize of the whole image, no crop, no augmentation)."""
    from timm.data import create_transform

    from ..data import to_rgb

    transform = create_transform(size, interpolation='bicubic', mean=tuple(mean), std=tuple(std), crop_pct=1.0,
                                 crop_mode='squash')
    return torch.stack([transform(to_rgb(im)) for im in images])


@torch.no_grad()
def extract_feature_maps(backbone: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``forward_features`` of the frozen backbone (put in eval mode: BN running statistics), (N, D, H, W)."""
    backbone.eval()
    maps = [backbone.forward_features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    out = torch.cat(maps).float()
    if out.dim() != 4:
        raise ValueError(f'{type(backbone).__name__}.forward_features gives {tuple(out.shape)}; the finetune '
                         f'study needs a CNN feature map (B, C, H, W).')
    return out.contiguous()


_SUPPORTED = ("timm's EfficientNet family (.blocks, .conv_head, .bn2; e.g. tf_efficientnet_lite0, "
              "efficientnet_b0, test_efficientnet) and ResNet family (.layer4; e.g. resnet18, test_resnet)")


def last_block(backbone: nn.Module) -> Tuple[nn.Module, List[nn.Module]]:
    """The backbone's last block and the modules ``forward_features`` applies after it, in order.

    EfficientNet: ``blocks[-1][-1]`` (``blocks`` is a Sequential of stages, each a Sequential of
    blocks), then ``conv_head`` and ``bn2`` (BatchNorm + activation). ResNet: ``layer4[-1]``, then
    nothing. Only classes whose ``forward_features`` is timm's own are accepted, since the cached
    path must reproduce it exactly; anything else is refused.
    """
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet

    cls = type(backbone)
    if isinstance(backbone, EfficientNet) and cls.forward_features is EfficientNet.forward_features:
        return backbone.blocks[-1][-1], [backbone.conv_head, backbone.bn2]
    if isinstance(backbone, ResNet) and cls.forward_features is ResNet.forward_features:
        return backbone.layer4[-1], []
    name = getattr(backbone, 'default_cfg', {}).get('architecture') or cls.__name__
    raise ValueError(f'train="last-block" does not know the last block of {name!r} ({cls.__name__}); it supports '
                     f'{_SUPPORTED}. Use train="head" (--train head) for other CNNs; both need a backbone whose '
                     f'forward_features is a (B, C, H, W) map, which rules out ViTs.')


class LastBlock(nn.Module):
    """The trainable end of a backbone: its last block, then what ``forward_features`` does after it."""

    def __init__(self, block: nn.Module, tail: Sequence[nn.Module]):
        super().__init__()
        self.block = block
        self.tail = nn.Sequential(*tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.block(x))


def trainable_last_block(backbone: nn.Module) -> LastBlock:
    """A deep copy of the backbone's last block and tail (:func:`last_block`), trainable, in eval mode.

    The backbone itself is left untouched (its parameters keep ``requires_grad`` as they are).
    """
    block, tail = last_block(backbone)
    return copy.deepcopy(LastBlock(block, tail)).eval().requires_grad_(True)


@torch.no_grad()
def extract_block_inputs(backbone: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """What the frozen backbone (eval mode) feeds its last block (:func:`last_block`), (N, C, H, W).

    Taken by a hook during ``forward_features`` itself, so the cache is by construction what the
    backbone's own forward gives the block.
    """
    block, _ = last_block(backbone)
    backbone.eval()
    inputs: List[torch.Tensor] = []
    hook = block.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    try:
        for i in range(0, len(x), batch_size):
            backbone.forward_features(x[i:i + batch_size])
    finally:
        hook.remove()
    return torch.cat(inputs).float().contiguous()


def load_source(source: str, study_dir: Path):
    """The train and test splits of ``source`` (``photo-patches`` is built in ``study_dir``) and its classes."""
    from ..data import PHOTO_PATCHES, build_photo_patches, class_names, load_image_dataset

    path = str(build_photo_patches(study_dir / 'photo_patches')) if source == PHOTO_PATCHES else source
    train = load_image_dataset(path, 'train')
    names = class_names(train)
    test = load_image_dataset(path, 'test', class_names=names)
    return train, test, names


def _cache(output: Path, source: str, train: str, img_size: int, fingerprint: str) -> Tuple[Path, Dict[str, str]]:
    tag = source.replace('/', '_').strip('_.')
    cached = CACHED[train]
    path = Path(output) / 'features' / f'{tag}_{img_size}px_{cached}.safetensors'
    return path, {'backbone': fingerprint, 'img_size': str(img_size), 'source': source, 'cached': cached}


def read_cached_features(output: Path, source: str, train: str, img_size: int,
                         fingerprint: str) -> Optional[Dict[str, torch.Tensor]]:
    """The cache :func:`cached_features` wrote for the backbone of ``fingerprint``, or None if there is none."""
    from safetensors.torch import load_file, safe_open

    path, meta = _cache(output, source, train, img_size, fingerprint)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), 'pt') as f:
            if f.metadata() != meta:
                return None  # another backbone's or size's: computed again
        tensors = load_file(str(path))
    except Exception as e:  # safetensors refuses truncated or extended files
        _logger.warning('%s is not a readable feature cache (%s); computing it again.', path, e)
        return None
    problem = _cache_problem(tensors)
    if problem:
        _logger.warning('%s: %s; computing it again.', path, problem)
        return None
    return tensors


def _cache_problem(tensors: Dict[str, torch.Tensor]) -> str:
    """What is wrong with a loaded cache ('' if nothing): every field, shape and label range."""
    for split in ('train', 'test'):
        maps, labels = tensors.get(f'{split}_maps'), tensors.get(f'{split}_labels')
        if maps is None or maps.dim() != 4 or not maps.is_floating_point():
            return f'field {split}_maps must be a (N, C, H, W) float tensor'
        if labels is None or labels.dim() != 1 or len(labels) != len(maps) or labels.dtype != torch.int64:
            return f'field {split}_labels must be {len(maps)} int64 labels'
        if len(labels) and int(labels.min()) < 0:
            return f'field {split}_labels holds negative labels'
        if not bool(torch.isfinite(maps).all()):
            return f'field {split}_maps holds NaN or inf'
    if tensors['train_maps'].shape[1:] != tensors['test_maps'].shape[1:]:
        return 'fields train_maps and test_maps differ in shape'
    return ''


def cached_features(
        output: Path, source: str, train: str, img_size: int, backbone: nn.Module, fingerprint: Optional[str] = None,
        extract_batch: int = 64,
) -> Dict[str, torch.Tensor]:
    """The backbone's maps of ``source``'s train and test images, from ``output/features`` or computed once.

    What is cached follows ``train`` (:data:`CACHED`). The file (safetensors, written atomically)
    names what it holds in its file name and metadata, with the backbone's weights fingerprint
    (``fingerprint``, computed if not given) and the input size; a file made from other weights or
    settings is computed again, not reused.
    """
    from safetensors.torch import save

    fingerprint = fingerprint or backbone_fingerprint(backbone)
    found = read_cached_features(output, source, train, img_size, fingerprint)
    if found is not None:
        return found
    path, meta = _cache(output, source, train, img_size, fingerprint)
    extract = extract_feature_maps if train == 'head' else extract_block_inputs
    mean, std = backbone.pretrained_cfg.get('mean'), backbone.pretrained_cfg.get('std')
    train_ds, test_ds, names = load_source(source, Path(output))
    if not names or len(names) < 3:
        raise ValueError(f'{source!r} needs a label column with >= 3 classes for the U(1) loss, got {names}.')
    tensors = {}
    for split, ds in (('train', train_ds), ('test', test_ds)):
        x = preprocess(ds['image'], img_size, mean, std)
        tensors[f'{split}_maps'] = extract(backbone, x, extract_batch)
        tensors[f'{split}_labels'] = torch.tensor(ds['label'], dtype=torch.int64)
    with atomic_path(path) as tmp:
        tmp.write_bytes(save(tensors, metadata=meta))  # into the temp file atomic_path made (its permissions)
    return tensors


def create_backbone(model: str, pretrained: Optional[bool]) -> nn.Module:
    """The frozen backbone of a study, in eval mode; a randomly initialised one is the same in every process."""
    from ..io.factory import create_model_from_spec

    with torch.random.fork_rng():
        torch.manual_seed(0)  # a backbone without pretrained weights: one fixed draw, so its cache can be reused
        backbone = create_model_from_spec(model, pretrained=pretrained)
    return backbone.eval().requires_grad_(False)
