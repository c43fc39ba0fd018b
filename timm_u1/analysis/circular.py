"""Circular statistics of angles given as unit vectors: mean direction and resultant length, the Rayleigh test,
the class statistic T of the label-permutation tests, and angle sectors."""
import math
from typing import Dict, Optional

import torch

__all__ = [
    'circular_summary', 'rayleigh_test', 'rayleigh_log10_p', 'RAYLEIGH_QUESTION', 'class_statistic', 'angle_bins',
    'relative_angle', 'json_float',
]

# what the Rayleigh test asks, said in every report: it is no test of class dependence
RAYLEIGH_QUESTION = (
    'Rayleigh test: are the per-image directions uniform on the circle? Any non-negative (ReLU) '
    'features, trained or not, fail it trivially; it says nothing about classes. Reported as log10 p '
    '(Zar approximation; p itself underflows).')


def rayleigh_test(n: float, resultant: float) -> float:
    """p-value of the Rayleigh test of uniformity for n unit vectors summing to length ``resultant``.

    Uses Zar's (Biostatistical Analysis, eq. 27.4) approximation,
    p = exp(sqrt(1 + 4n + 4(n^2 - Rn^2)) - (1 + 2n)), accurate to about 1e-3 from n = 10 on.
    """
    if n < 2:
        return float('nan')
    p = math.exp(math.sqrt(1 + 4 * n + 4 * (n * n - resultant * resultant)) - (1 + 2 * n))
    return min(1.0, p)


def rayleigh_log10_p(n: float, resultant: float) -> float:
    """log10 of :func:`rayleigh_test`'s p-value, without the underflow of p (p = 0 from about n R^2 > 745)."""
    if n < 2:
        return float('nan')
    log_p = math.sqrt(1 + 4 * n + 4 * (n * n - resultant * resultant)) - (1 + 2 * n)
    return min(0.0, log_p) / math.log(10)


def circular_summary(cos_sum: float, sin_sum: float, weight: float) -> Dict[str, float]:
    """Mean direction (degrees) and mean resultant length R in [0, 1] of weighted unit vectors."""
    if weight <= 0:
        return {'mean_direction_deg': float('nan'), 'resultant_length': float('nan')}
    length = math.hypot(cos_sum, sin_sum)
    direction = math.degrees(math.atan2(sin_sum, cos_sum)) if length > 0 else float('nan')
    return {'mean_direction_deg': direction, 'resultant_length': length / weight}


def class_statistic(class_sums: torch.Tensor) -> torch.Tensor:
    """T = (sum_c |S_c| - |S|) / n from per-class sums (..., C, 3) of [cos, sin, count] of unit vectors.

    T is 0 when every class has the same mean direction and grows as the class means differ; NaN where n = 0.
    """
    n = class_sums[..., 2].sum(-1)
    within = torch.hypot(class_sums[..., 0], class_sums[..., 1]).sum(-1)
    total = torch.hypot(class_sums[..., 0].sum(-1), class_sums[..., 1].sum(-1))
    return torch.where(n > 0, (within - total) / n.clamp_min(1), torch.full_like(n, float('nan')))


def angle_bins(angle: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index of angles in (-pi, pi] on ``bins`` equal sectors starting at -pi."""
    idx = torch.floor((angle + math.pi) / (2 * math.pi) * bins).long()
    return idx.clamp_(0, bins - 1)


def relative_angle(u: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Unit vectors (B, 2) of angle(u) - angle(ref); zero where either is zero."""
    return torch.stack([u[:, 0] * ref[:, 0] + u[:, 1] * ref[:, 1], u[:, 1] * ref[:, 0] - u[:, 0] * ref[:, 1]], 1)


def json_float(x: float) -> Optional[float]:
    """``x``, or None for NaN (JSON has no NaN)."""
    return None if math.isnan(x) else float(x)
