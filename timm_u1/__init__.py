"""timm_u1: U(1) symmetry-breaking for timm models.

Importing the package registers a ``u1_`` twin of every timm architecture (see :mod:`timm_u1.core.u1`).
The concepts live in sub-packages named for what they hold: :mod:`~timm_u1.core` (hue, loss, twins),
:mod:`~timm_u1.io` (model specs, Hub layout), :mod:`~timm_u1.data`, :mod:`~timm_u1.runs`,
:mod:`~timm_u1.analysis`, :mod:`~timm_u1.memory`, :mod:`~timm_u1.training`, :mod:`~timm_u1.studies`;
the heavy ones are imported only when used.
"""
from .version import __version__
from . import _moved
from .core.hue import (
    HueStats, activation_hue, chroma, energy, energy_centroid, hue_angle, hue_components,
    image_plane_grid, label_hue, luminance, target_hue_vector,
)
from .core.u1 import U1Config, U1Output, feature_map_nchw, get_u1_config, is_u1_model, register_u1_models
from .core.loss import U1Loss, U1LossParts, hue_loss
from .io.load import from_pretrained
from .io.save import save_pretrained

__all__ = [
    '__version__',
    'HueStats', 'activation_hue', 'chroma', 'energy', 'energy_centroid', 'hue_angle', 'hue_components',
    'image_plane_grid', 'label_hue', 'luminance', 'target_hue_vector',
    'U1Config', 'U1Output', 'feature_map_nchw', 'get_u1_config', 'is_u1_model', 'register_u1_models',
    'U1Loss', 'U1LossParts', 'hue_loss',
    'from_pretrained', 'save_pretrained',
]

_moved.install()
# the V1 models first (lgn_v1net_*, v1_<arch>), so that each gets its u1_ twin too
from .early import v1net as _v1net  # noqa: E402,F401  (registers lgn_v1net_s / _m with timm)
from .early.stem import register_v1_models  # noqa: E402

register_v1_models()
register_u1_models()
