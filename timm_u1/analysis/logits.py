"""The logits' hue, where the paper's claim (b) is made: with channel c = class c, the hue of the logits and the
class's label hue 2 pi c / C can be compared. Alignment A = mean over images of cos(theta(logits) - theta_class),
against label permutations and against random class orders (the same relabelling of logits and label hues)."""
import math
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from .angles import channel_orders, hue_vectors
from .decoding import AngleClassAccumulator, group_permutations, order_null
from .probe import ActivationProbe

__all__ = ['LogitHue', 'alignment', 'logit_classes_mismatch', 'batch_logits']


def logit_classes_mismatch(model: nn.Module, num_classes: int) -> Optional[str]:
    """Why the logits' hue cannot be compared with the data's label hue (None: it can)."""
    outputs = getattr(model, 'num_classes', None)
    if num_classes < 3:
        return f'the data has {num_classes} classes; a hue needs at least 3'
    if outputs != num_classes:
        return (f"the model's {outputs} outputs are not the data's {num_classes} classes: the logits' hue is the "
                f'label hue only for a model trained on these classes, in their order')
    return None


def batch_logits(model: nn.Module, probe: ActivationProbe, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A function giving the logits of the batch ``probe`` just ran: the bottleneck's features through the head
    (no second pass), or the full forward for another layer."""
    features = probe.features if probe.layer is None else None

    def logits() -> torch.Tensor:
        out = model.forward_head(features) if features is not None else model(images)
        return out.detach().float().cpu()
    return logits


def alignment(class_sums: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """A = sum_c S_c . (cos, sin)(2 pi position_c / C) / n from per-class sums (..., C, 3) of [cos, sin, count]."""
    num = class_sums.shape[-2]
    angle = 2 * math.pi * positions.double() / num
    dot = class_sums[..., 0] * torch.cos(angle) + class_sums[..., 1] * torch.sin(angle)
    return dot.sum(-1) / class_sums[..., 2].sum(-1).clamp_min(1)


class LogitHue:
    """Streams the logits' hue of one source under the natural class order and ``orders`` random ones."""

    def __init__(self, num_classes: int, level: Any, seed: int, orders: int = 0):
        self.orders = channel_orders(num_classes, orders, seed + 7)  # natural first
        self.acc = AngleClassAccumulator(num_classes, groups=len(self.orders), folds=level.folds, bins=level.bins,
                                         permutations=level.permutations, seed=seed,
                                         group_permutations=group_permutations(level, len(self.orders), num_classes))

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.acc.update(hue_vectors(logits.float()[:, :, None, None], self.orders), labels)

    def result(self) -> Dict[str, Any]:
        res = self.acc.result()
        out = {k: v for k, v in res.items() if k not in ('statistic', 'accuracy', 'statistic_z_groups')}
        out.update(statistic=res['statistic'][0], accuracy=res['accuracy'][0])
        per_order = alignment(self.acc.sums, self.orders)  # (G,): class c's label hue at its position in order g
        out['alignment'] = float(per_order[0])
        if self.acc.permutations and out['images'] >= 2:
            null = alignment(self.acc.perm_sums, self.orders[0])
            out['alignment_null_mean'] = float(null.mean())
            out['alignment_p_value'] = (1 + int((null >= per_order[0] - 1e-12).sum())) / (len(null) + 1)
        if len(self.orders) > 1:
            out['class_orders'] = order_null({'alignment': per_order.tolist(), 'statistic': res['statistic'],
                                              'standardised': res.get('statistic_z_groups')})
        return out
