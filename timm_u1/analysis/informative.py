"""The class-informative activations of the paper: locations whose activation vector's nearest neighbour (cosine,
among the locations of the other images: a bare nearest-neighbour memory) has the image's class, and the hue theta
of each image over those locations only."""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..core.knn import topk_inner_product
from .angles import hue_vectors
from .decoding import AngleClassAccumulator, group_permutations

__all__ = ['class_informative', 'InformativeHue']


def class_informative(maps: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], float]:
    """(per batch a (B, H, W) mask of the class-informative locations, share of labelled locations that are).

    ``maps``: batches of (B, C, H, W) maps; ``labels``: their (B,) labels (-1: unlabelled, never informative).
    A location is informative when the location nearest to it by cosine in any other image has its class;
    locations without energy are not.
    """
    shapes = [m.shape for m in maps]
    vectors = torch.cat([m.detach().float().flatten(2).transpose(1, 2).reshape(-1, m.shape[1]) for m in maps])
    per_image = shapes[0][2] * shapes[0][3]
    image = torch.arange(sum(s[0] for s in shapes)).repeat_interleave(per_image)
    label = torch.cat([torch.as_tensor(y).long().flatten() for y in labels]).repeat_interleave(per_image)
    norm = vectors.norm(dim=1, keepdim=True)
    unit = vectors / norm.clamp_min(1e-30)
    # the k = locations per image + 1 best keys hold at least one location of another image
    _, index = topk_inner_product(unit, unit, min(per_image + 1, len(unit)))
    other = image[index] != image.unsqueeze(1)
    nearest = index.gather(1, other.double().argmax(1, keepdim=True)).squeeze(1)
    informative = other.any(1) & (label >= 0) & (label[nearest] == label) & (norm.squeeze(1) > 0)
    labelled = int((label >= 0).sum())
    share = float(informative.sum()) / labelled if labelled else float('nan')
    masks = list(informative.view(-1, shapes[0][2], shapes[0][3]).split([s[0] for s in shapes]))
    return masks, share


class InformativeHue:
    """Collects the maps of one source's first ``images`` images, then gives the class dependence of the hue over
    their class-informative locations (T, its standardised value, decoding; under ``orders`` if given)."""

    def __init__(self, num_classes: int, level: Any, orders: Optional[torch.Tensor], seed: int,
                 images: Optional[int]):
        self.num_classes, self.level, self.orders, self.seed, self.limit = num_classes, level, orders, seed, images
        self.maps: List[torch.Tensor] = []
        self.labels: List[torch.Tensor] = []
        self.held = 0

    def update(self, fmap: torch.Tensor, labels: torch.Tensor) -> None:
        room = len(fmap) if self.limit is None else min(len(fmap), self.limit - self.held)
        if room <= 0:
            return
        self.maps.append(fmap[:room].detach().float().cpu())
        self.labels.append(torch.as_tensor(labels).long().flatten()[:room])
        self.held += room

    def result(self) -> Optional[Dict[str, Any]]:
        """None when the maps have fewer than 3 channels or no two labelled images."""
        if not self.maps or self.maps[0].shape[1] < 3 or self.held < 2:
            return None
        masks, share = class_informative(self.maps, self.labels)
        lv = self.level
        orders = self.orders if self.orders is not None else torch.arange(self.maps[0].shape[1]).unsqueeze(0)
        acc = AngleClassAccumulator(self.num_classes, groups=len(orders), folds=lv.folds, bins=lv.bins,
                                    permutations=lv.permutations, seed=self.seed,
                                    group_permutations=group_permutations(lv, len(orders), self.num_classes))
        for fmap, labels, mask in zip(self.maps, self.labels, masks):
            acc.update(hue_vectors(fmap, orders, mask=mask), labels)
        labels = torch.cat(self.labels)
        counts = torch.bincount(labels[labels >= 0], minlength=self.num_classes).double()
        out = acc.result()
        out.update(locations=int(sum(m.numel() for m in masks)), informative_share=share,
                   chance_share=float((counts / counts.sum()).square().sum()))
        return out
