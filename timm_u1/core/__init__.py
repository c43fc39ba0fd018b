"""The math and the models: activation hue, the U(1) loss, the ``u1_`` twins, exact k-NN search, offline weights."""
from .hue import (
    HueStats, activation_hue, chroma, energy, energy_centroid, hue_angle, hue_basis, hue_components,
    image_plane_grid, label_hue, luminance, target_hue_vector,
)
from .u1 import (
    U1_PREFIX, U1Config, U1ModelMixin, U1Output, feature_map_nchw, get_u1_config, is_u1_model,
    register_u1_models,
)
from .loss import U1Loss, U1LossParts, hue_loss

__all__ = [
    'HueStats', 'activation_hue', 'chroma', 'energy', 'energy_centroid', 'hue_angle', 'hue_basis',
    'hue_components', 'image_plane_grid', 'label_hue', 'luminance', 'target_hue_vector', 'U1_PREFIX',
    'U1Config', 'U1ModelMixin', 'U1Output', 'feature_map_nchw', 'get_u1_config', 'is_u1_model',
    'register_u1_models', 'U1Loss', 'U1LossParts', 'hue_loss',
]
