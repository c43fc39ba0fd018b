"""Angle bins of a feature-map grid: the centre cell and sectors of the image-plane angle phi."""
import math

import torch

from ..core.hue import image_plane_grid

__all__ = ['angle_bins', 'MAX_BINS']

MAX_BINS = 360  # one-degree sectors: more than a feature map has cells, and each bin costs C x D sums


def angle_bins(height: int, width: int, num_bins: int, centre_radius: float = 0.5) -> torch.Tensor:
    """Angle bin of every location of an (H, W) grid, flattened row-major to (H * W,).

    Bin 0 holds the locations closer than ``centre_radius`` grid cells to the centre (the centre cell of
    an odd grid; none of an even one with the default 0.5). Bin j = 1..K holds the other locations
    whose phi is within pi / K of (j - 1) 2 pi / K: sector 1 is centred on the +x axis and the
    sectors go round with phi (clockwise on screen, since y grows downwards). A location exactly on
    a sector edge goes to the next sector. ``num_bins=0`` puts every location in bin 0 (plain class
    prototypes, no angle).
    """
    if num_bins < 0:
        raise ValueError(f'num_bins must be >= 0, got {num_bins}.')
    dx, dy, _, r = image_plane_grid(height, width)
    if num_bins == 0:
        return torch.zeros(height * width, dtype=torch.long)
    # float64 and a tolerance: grid cells often lie exactly on a sector edge (e.g. the diagonals of
    # an even grid for K = 4), and must fall on the same side on every machine
    sector_width = 2 * math.pi / num_bins
    phi = torch.atan2(dy.double(), dx.double())
    sector = torch.floor((phi + sector_width / 2) / sector_width + 1e-9).long() % num_bins
    return torch.where(r < centre_radius, 0, sector + 1).flatten()
