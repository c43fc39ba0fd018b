"""timm_u1: U(1) symmetry-breaking for timm models.

Importing the package registers a ``u1_`` twin of every timm architecture (see :mod:`timm_u1.u1`).
Heavy optional pieces (plots, datasets, memories, Hub uploads) are imported only when used:
``timm_u1.analyze``, ``timm_u1.memory``, ``timm_u1.publish``, ``timm_u1.data``, ``timm_u1.lite0``.
"""
from .version import __version__
from .hue import (
    HueStats, activation_hue, chroma, energy, energy_centroid, hue_angle, hue_components,
    image_plane_grid, label_hue, luminance, target_hue_vector,
)
from .u1 import U1Config, U1Output, feature_map_nchw, get_u1_config, is_u1_model, register_u1_models
from .loss import U1Loss, U1LossParts, hue_loss
from .hub import from_pretrained, save_pretrained

__all__ = [
    '__version__',
    'HueStats', 'activation_hue', 'chroma', 'energy', 'energy_centroid', 'hue_angle', 'hue_components',
    'image_plane_grid', 'label_hue', 'luminance', 'target_hue_vector',
    'U1Config', 'U1Output', 'feature_map_nchw', 'get_u1_config', 'is_u1_model', 'register_u1_models',
    'U1Loss', 'U1LossParts', 'hue_loss',
    'from_pretrained', 'save_pretrained',
]

register_u1_models()
