"""Model cards rendered from the Jinja templates in ``model_cards/``."""
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

__all__ = ['template_path', 'render_model_card']

_PACKAGE_DIR = Path(__file__).resolve().parent


def template_path(name: str) -> Path:
    """A template shipped in the wheel (``timm_u1/model_cards``) or, in a source checkout, ``model_cards/``."""
    for folder in (_PACKAGE_DIR / 'model_cards', _PACKAGE_DIR.parent / 'model_cards'):
        path = folder / name
        if path.is_file():
            return path
    raise FileNotFoundError(f'Model card template {name!r} not found next to {_PACKAGE_DIR}; reinstall timm_u1.')


def render_model_card(
        pretrained_cfg: Dict[str, Any],
        num_features: int,
        repo_id: str = 'ORG/NAME',
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        training: Optional[str] = None,
        plots: Sequence[str] = (),
        license: Optional[str] = None,
        template: str = 'u1_model.md',
) -> str:
    """Markdown (with the Hub's YAML metadata header) describing a u1 model."""
    from huggingface_hub import ModelCard, ModelCardData

    architecture = pretrained_cfg['architecture']
    base_architecture = architecture[3:] if architecture.startswith('u1_') else architecture
    base_model = pretrained_cfg.get('hf_hub_id') if pretrained_cfg.get('source') != 'local-dir' else None
    tags = ['image-classification', 'timm', 'timm_u1', 'u1-symmetry-breaking']
    card_data = ModelCardData(
        library_name='timm',
        license=license or pretrained_cfg.get('license') or 'apache-2.0',
        tags=tags,
        datasets=[dataset] if dataset else None,
        metrics=sorted(metrics) if metrics else None,
        base_model=base_model or None,
        pipeline_tag='image-classification',
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path(template)),
        model_name=repo_id.split('/')[-1],
        repo_id=repo_id,
        architecture=architecture,
        base_architecture=base_architecture,
        base_model=base_model,
        num_classes=pretrained_cfg.get('num_classes'),
        num_features=num_features,
        input_size=tuple(pretrained_cfg.get('input_size', ())),
        mean=tuple(round(float(v), 4) for v in pretrained_cfg.get('mean', ())),
        std=tuple(round(float(v), 4) for v in pretrained_cfg.get('std', ())),
        interpolation=pretrained_cfg.get('interpolation'),
        crop_pct=pretrained_cfg.get('crop_pct'),
        u1=pretrained_cfg.get('u1') or {},
        dataset=dataset,
        training=training,
        metrics=metrics or {},
        plots=list(plots),
        label_names=list(pretrained_cfg.get('label_names') or ()),
    )
    return str(card)
