"""The input image as a control: its pixels as an "activation map" on the model map's grid, and transformed
(rotated, off-centre-cropped) copies of a batch."""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['input_map', 'transformed_copies']


def input_map(
        images: torch.Tensor,
        grid: Tuple[int, int],
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        patch: int = 4,
) -> torch.Tensor:
    """The input as a (B, 3 patch^2, H, W) "activation map" on the model map's (H, W) grid.

    Normalisation is undone (pixels in [0, 1], so a dark background has no energy), the image is
    area-pooled to (patch H, patch W) and each patch x patch cell becomes the channels of its
    location: channel order = (row, column, colour) within the cell.
    """
    if images.dim() != 4:
        raise ValueError(f'Expected images (B, C, H, W), got {tuple(images.shape)}.')
    x = images.float()
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    x = x * s + m
    h, w = grid
    x = F.adaptive_avg_pool2d(x, (patch * h, patch * w))
    b, c = x.shape[:2]
    # position-major (row, column, colour): colour-major order would repeat a grey image's cell with
    # period patch^2 three times, and the three copies' hues cancel (1 + w + w^2 = 0), so grey inputs
    # would have no hue at all
    cells = F.pixel_unshuffle(x, patch).view(b, c, patch * patch, h, w)
    return cells.transpose(1, 2).reshape(b, c * patch * patch, h, w)


def transformed_copies(images: torch.Tensor) -> List[Tuple[str, torch.Tensor]]:
    """Rotated (90, 180, 270 degrees; square images only) and off-centre-cropped copies of a batch.

    An off-centre crop is the 3/4-size window at one corner, resized back to the full size, so the
    content moves away from the centre towards the opposite corner.
    """
    out = []
    h, w = images.shape[-2:]
    if h == w:
        out += [(f'rot{90 * k}', torch.rot90(images, k, dims=(2, 3))) for k in (1, 2, 3)]
    ch, cw = (3 * h) // 4, (3 * w) // 4
    for name, (y, x) in (('crop_top_left', (0, 0)), ('crop_top_right', (0, w - cw)),
                         ('crop_bottom_left', (h - ch, 0)), ('crop_bottom_right', (h - ch, w - cw))):
        crop = images[..., y:y + ch, x:x + cw]
        out.append((name, F.interpolate(crop, size=(h, w), mode='bilinear', align_corners=False)))
    return out
