"""The controls' share of the statistics pass: the trained model's maps of the first (control) images are taken
from the pass that computes them anyway, instead of a second pass over the same images (same batches, same
numbers as :func:`timm_u1.analysis.controls.run_controls`)."""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .controls import ControlImages, ControlLevel, TrainedControls
from .logits import batch_logits
from .probe import ActivationProbe

__all__ = ['ControlTap']


class ControlTap:
    """Called with every batch of the statistics pass, in order, as (images or None, labels, maps or None, images
    the batch held, a function giving its logits); keeps those batches that are exactly batches of the control images (positions 0 .. count - 1
    cut into ``batch_size``) and their images, for the random networks, while they fit in ``max_bytes``.

    Args:
        num_classes, level, mean, std, seed, logits: as for :class:`timm_u1.analysis.controls.TrainedControls`.
        count: the number of control images (the first of the analysis order).
        batch_size: the batch size of both the pass and the controls.
    """

    def __init__(self, num_classes: int, level: ControlLevel, mean: Sequence[float], std: Sequence[float],
                 seed: int, count: int, batch_size: int, max_bytes: int = 1 << 29, logits: bool = False):
        self.num_classes, self.level, self.mean, self.std, self.seed = num_classes, level, mean, std, seed
        self.count, self.batch_size, self.max_bytes, self.logits = count, batch_size, max_bytes, logits
        self.trained = self._trained()
        self.batches: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = []
        self.covered = 0  # control positions already handed over, from 0 on
        self.position = 0  # position in the analysis order of the next batch of the pass
        self.open = True
        self._bytes = 0

    def _trained(self) -> TrainedControls:
        return TrainedControls(self.num_classes, self.level, self.mean, self.std, self.seed, logits=self.logits)

    def close(self) -> None:
        """Take nothing more: the pass did not start at the first image (a resumed run)."""
        self.open = False

    def __call__(self, batch) -> None:
        images, labels, fmap, held, logits = batch
        start, self.position = self.position, self.position + held
        # a batch of the controls' own loader: from a multiple of batch_size to the next one or to the end
        whole = start == self.covered and (held == self.batch_size or self.position == self.count)
        if not (self.open and whole and self.position <= self.count):
            return
        self.covered = self.position
        if images is None:
            return  # every image of the batch unreadable: the controls skip it too
        self.trained.update(images, torch.as_tensor(labels), fmap, logits)
        if self.batches is not None:
            self._bytes += images.numel() * images.element_size()
            self.batches = self.batches + [(images, torch.as_tensor(labels))] if self._bytes <= self.max_bytes else None

    @torch.inference_mode()
    def finish(self, model: nn.Module, layer: Optional[str], loader: Callable[[int, int], object],
               device) -> Tuple[TrainedControls, ControlImages]:
        """The trained model's controls over every control image and the images for the random networks.

        ``loader(start, stop)`` makes the controls' loader over positions start .. stop - 1. What the pass did not
        hand over (a shard that ends early, a resumed run) is computed here, batch for batch as the controls would.
        """
        if not self.open:
            self.trained, self.batches, self.covered = self._trained(), [], 0
        if self.covered < self.count:
            rest = ControlImages(loader(self.covered, self.count))
            with ActivationProbe(model.eval().to(device), layer) as probe:
                for images, labels in rest:
                    x = images.to(device)
                    self.trained.update(images, labels, probe(x), batch_logits(model, probe, x))
                    if self.batches is not None:
                        self.batches.append((images, labels))
        data = ControlImages(batches=self.batches) if self.batches is not None else ControlImages(loader(0, self.count))
        return self.trained, data
