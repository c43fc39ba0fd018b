"""The image-plane test of ``--controls full``: over rotated and off-centre-cropped copies of the images, does a
network's energy-centroid angle phi just follow the input's own?"""
import math
from typing import Any, Dict, Iterable, Optional, Sequence, Union

import torch
from torch import nn

from .angles import centroid_vectors
from .circular import relative_angle
from .inputs import input_map, transformed_copies
from .probe import ActivationProbe

__all__ = ['FollowsInput', 'follow_pass', 'FOLLOW_QUESTION']

FOLLOW_QUESTION = ("over rotated and off-centre-cropped copies: does the network's energy-centroid angle sit at "
                   "a fixed angle from the input's own (R near 1: it follows the input)?")


class FollowsInput:
    """Streams the resultant length R of phi_net - phi_input (1 = the network's centroid sits at a fixed angle
    from the input's: it follows the input) and the mean offset.

    No class decoding here: the copies of one image would fall into different cross-validation folds and leak.
    The arguments are unused and kept for the callers of timm_u1 0.1.
    """

    def __init__(self, num_classes: int = 0, level: Any = None, seed: int = 0):
        self.sum = torch.zeros(3, dtype=torch.float64)

    def update(self, fmap: torch.Tensor, inp: torch.Tensor, labels: Optional[torch.Tensor] = None) -> None:
        if fmap.shape[-2] * fmap.shape[-1] < 2:
            return
        rel = relative_angle(centroid_vectors(fmap.float().square().sum(1)), centroid_vectors(inp.square().sum(1)))
        ok = rel.abs().sum(1) > 0
        self.sum += torch.cat([rel[ok].sum(0), ok.sum().double().view(1)])

    def result(self) -> Dict[str, Any]:
        c, s, n = self.sum.tolist()
        return {'images': int(n), 'follow_resultant_length': math.hypot(c, s) / n if n else None,
                'mean_offset_deg': math.degrees(math.atan2(s, c)) if n else None}


def follow_pass(net: nn.Module, data: Iterable, layer: Optional[str], mean: Sequence[float], std: Sequence[float],
                device: Union[str, torch.device]) -> Dict[str, Any]:
    """:class:`FollowsInput` of ``net`` over the transformed copies of every (images, labels) batch of ``data``."""
    follow = FollowsInput()
    with ActivationProbe(net, layer) as probe:
        for images, labels in data:
            for _name, x in transformed_copies(images):
                fmap = probe(x.to(device)).float().cpu()
                follow.update(fmap, input_map(x, fmap.shape[-2:], mean, std), labels)
    return follow.result()
