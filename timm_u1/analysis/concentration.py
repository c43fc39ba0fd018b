"""Claim (a)'s numbers, model against input on the same images: the mean-map centre concentration (the paper's
figure) with an image-bootstrap interval of the difference, the per-image sign test, and the same mean-map test
with the input's energy raised to other exponents (its scale is arbitrary)."""
from typing import Any, Dict, Sequence

import torch

from .circular import json_float
from .signtest import sign_test_p

__all__ = ['concentration_tests', 'INPUT_EXPONENTS', 'BOOTSTRAP_RESAMPLES']

# the input's energy is squared pixels, as the activations' is squared activations; other powers are as defensible
INPUT_EXPONENTS = (0.5, 1.0, 1.5, 2.0)
BOOTSTRAP_RESAMPLES = 2000


def _key(exponent: float) -> str:
    return f'{exponent:g}'


def mean_map_test(model: torch.Tensor, inp: torch.Tensor, share: float, resamples: int, seed: int) -> Dict[str, Any]:
    """Mean-map concentrations of model and input from per-image (centre, all) energies (n, 2) on the same images,
    their difference and its 95 % image-bootstrap interval (images resampled with replacement, paired)."""
    ok = (model[:, 1] > 0) & (inp[:, 1] > 0)
    model, inp = model[ok], inp[ok]
    n = len(model)
    if n == 0:
        return {'images': 0}

    def concentration(parts: torch.Tensor) -> torch.Tensor:
        return parts[..., 0].sum(-1) / parts[..., 1].sum(-1) / share

    m, i = float(concentration(model)), float(concentration(inp))
    index = torch.randint(n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    diff = concentration(model[index]) - concentration(inp[index])
    low, high = torch.quantile(diff, torch.tensor([0.025, 0.975], dtype=diff.dtype)).tolist()
    return {'images': n, 'model': m, 'input': i, 'difference': m - i, 'ci': [low, high], 'resamples': resamples}


def concentration_tests(model_ctl, input_ctl, seed: int = 0,
                        exponents: Sequence[float] = INPUT_EXPONENTS,
                        resamples: int = BOOTSTRAP_RESAMPLES) -> Dict[str, Any]:
    """The ``concentration_model_vs_input`` section from the two sources' :class:`MapControls`."""
    mc, ic = model_ctl.image_concentration(), input_ctl.image_concentration()
    if mc.numel() == ic.numel():
        ok = ~(torch.isnan(mc) | torch.isnan(ic))
        higher, lower = int((mc[ok] > ic[ok]).sum()), int((mc[ok] < ic[ok]).sum())
    else:
        ok, higher, lower = torch.zeros(0, dtype=torch.bool), 0, 0
    out: Dict[str, Any] = {
        'images': int(ok.sum()), 'model_higher': higher, 'input_higher': lower,
        'sign_test_p': sign_test_p(higher, higher + lower),
        # image by image, in the controls' order (where the verdict rests on a few images, which ones)
        'per_image': {'model': [json_float(v) for v in mc.tolist()], 'input': [json_float(v) for v in ic.tolist()]},
    }
    model, share = model_ctl.image_centre_energy(1.0), model_ctl.centre_share
    if len(model) and share > 0:
        out['mean_map'] = mean_map_test(model, input_ctl.image_centre_energy(1.0), share, resamples, seed)
        out['input_exponents'] = {
            _key(x): mean_map_test(model, input_ctl.image_centre_energy(x), share, resamples, seed)
            for x in exponents if len(input_ctl.image_centre_energy(x)) == len(model)}
    return out
