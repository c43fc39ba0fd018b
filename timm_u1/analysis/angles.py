"""Per-image angles of a batch of maps as unit vectors: the activation hue theta under channel orders (the
natural order first) and the energy-centroid angle phi."""
from typing import Optional

import torch

from ..core.hue import CHROMA_RTOL, energy_centroid, hue_basis

__all__ = ['channel_orders', 'hue_vectors', 'centroid_vectors']


def channel_orders(num_channels: int, count: int, seed: int = 0) -> torch.Tensor:
    """(count + 1, N) channel orders: the natural order first, then ``count`` random ones."""
    gen = torch.Generator().manual_seed(seed)
    rand = torch.rand(count, num_channels, generator=gen).argsort(1)
    return torch.cat([torch.arange(num_channels).unsqueeze(0), rand], 0)


def hue_vectors(
        fmap: torch.Tensor,
        orders: Optional[torch.Tensor] = None,
        max_elements: int = 1 << 23,
        mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """(B, G, 2) per-image unit hue vector under each of G channel orders (zero: no hue).

    The vector is the direction of sum_xy E(x, y) * (a, b) / chroma over locations with a defined
    hue, as in :class:`timm_u1.analysis.sombrero.SombreroStatistics`; channel j takes the hue-basis
    vector of position ``order[j]``, so the identity order gives the natural hue. ``mask`` (B, H, W)
    keeps only some locations (e.g. the class-informative ones).
    """
    b, c, h, w = fmap.shape
    if orders is None:
        orders = torch.arange(c).unsqueeze(0)
    g = orders.shape[0]
    x = fmap.detach().float().permute(0, 2, 3, 1).reshape(b, h * w, c)
    basis = hue_basis(c, device=x.device)[orders.to(x.device)]  # (G, N, 2)
    basis = basis.permute(1, 0, 2).reshape(c, 2 * g)
    e = x.square().sum(-1)  # (B, HW)
    tol = CHROMA_RTOL * e.sqrt()
    if mask is not None:
        e = e * mask.reshape(b, h * w).to(e.dtype)
    out = torch.zeros(b, g, 2, dtype=torch.float64)
    # chunk images so the (images x locations x 2G) projection stays bounded
    step = max(1, max_elements // max(1, h * w * 2 * g))
    for i in range(0, b, step):
        z = (x[i:i + step] @ basis).view(-1, h * w, g, 2)
        chroma = torch.hypot(z[..., 0], z[..., 1])
        weight = e[i:i + step].unsqueeze(-1) * (chroma > tol[i:i + step].unsqueeze(-1))
        s = (z / chroma.clamp_min(1e-30).unsqueeze(-1) * weight.unsqueeze(-1)).sum(1).double()
        out[i:i + step] = s
    norm = torch.hypot(out[..., 0], out[..., 1])
    return out / norm.clamp_min(1e-300).unsqueeze(-1) * (norm > 0).unsqueeze(-1)


def centroid_vectors(energy_map: torch.Tensor) -> torch.Tensor:
    """(B, 2) unit vector of each image's energy-centroid angle phi (zero: centred or no energy)."""
    cen = energy_centroid(energy_map.double())
    ok = ~torch.isnan(cen.angle)
    phi = cen.angle.nan_to_num(0.0)
    return torch.stack([torch.cos(phi), torch.sin(phi)], 1) * ok.unsqueeze(1)
