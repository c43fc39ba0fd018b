"""Model cards rendered from the Jinja templates in ``model_cards/``.

Two templates: ``u1_model.md`` for u1 models and ``u1_memory.md`` for angle-prototype memories.
Both carry the Hub's YAML metadata header (library, tags, datasets, metrics, base model, license
and, when a dataset and numeric metrics are known, a ``model-index`` with the evaluation results).
"""
import re
from numbers import Real
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ['template_path', 'render_model_card', 'render_memory_card', 'dataset_reference', 'LOCAL_DATASETS']

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # timm_u1/
_TAGS = ['image-classification', 'timm', 'timm_u1', 'u1-symmetry-breaking']


def template_path(name: str) -> Path:
    """A template shipped in the wheel (``timm_u1/model_cards``) or, in a source checkout, ``model_cards/``."""
    for folder in (_PACKAGE_DIR / 'model_cards', _PACKAGE_DIR.parent / 'model_cards'):
        path = folder / name
        if path.is_file():
            return path
    raise FileNotFoundError(f'Model card template {name!r} not found next to {_PACKAGE_DIR}; reinstall timm_u1.')


# datasets timm_u1 builds locally (timm_u1.data), with what to call them: never Hub dataset ids
LOCAL_DATASETS = {
    'digits': "scikit-learn's digits (load_digits, 8x8 grey images, 10 classes)",
    'photos': "scikit-image's colour photographs",
}
# metrics the Hub's results widget knows, by the key timm_u1 reports them under: (type, name)
ACCURACY_METRICS = {
    'top1': ('accuracy', 'top-1 accuracy'),
    'top5': ('accuracy', 'top-5 accuracy'),
    'accuracy': ('accuracy', 'accuracy'),
}


def _accuracy_metric(key: str) -> Optional[Tuple[str, str]]:
    """``(type, name)`` for a metric the Hub shows as an accuracy (``top1``, ``top5``,
    ``test_accuracy_prototype``), None for the others (losses, hue errors: card body only)."""
    if key in ACCURACY_METRICS:
        return ACCURACY_METRICS[key]
    return ('accuracy', key.replace('_', ' ')) if 'accuracy' in key else None


def dataset_reference(dataset: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """``(hub_id, description)`` of a dataset: a Hub dataset id (``ORG/NAME``) only for data on the
    Hub; built-in data (``digits``) and local folders are described, not given as an id."""
    if not dataset:
        return None, None
    name = dataset.partition(':')[0]  # 'digits:train', as memory build records it
    if name in LOCAL_DATASETS:
        return None, f'`{name}`: {LOCAL_DATASETS[name]}'
    if Path(name).expanduser().exists() or name.startswith(('/', '.', '~')):
        return None, f'a local image folder (`{Path(name).name or name}`)'
    if re.fullmatch(r'[\w-][\w.-]*/[\w-][\w.-]*', name) or re.fullmatch(r'[\w-][\w.-]*', name):
        return name, f'[`{name}`](https://huggingface.co/datasets/{name})'
    return None, f'`{name}`'


def _eval_results(metrics: Optional[Mapping[str, Any]], dataset: Optional[str], split: Optional[str]):
    """``model-index`` entries: the accuracy metrics, on the dataset and split they were measured on."""
    from huggingface_hub import EvalResult

    hub_id, description = dataset_reference(dataset)
    if not metrics or not dataset:
        return None
    name = dataset.partition(':')[0]
    results = [
        EvalResult(
            task_type='image-classification', task_name='Image Classification',
            # dataset_type is a Hub dataset id: local data gets a type that no Hub dataset has
            dataset_type=hub_id or f'local:{Path(name).name or name}',
            dataset_name=hub_id or (description or name).replace('`', ''),
            dataset_split=split or dataset.partition(':')[2] or 'unspecified',
            metric_type=_accuracy_metric(key)[0], metric_name=_accuracy_metric(key)[1], metric_value=float(value))
        for key, value in metrics.items()
        if _accuracy_metric(key) and isinstance(value, Real) and not isinstance(value, bool)]
    return results or None


def _card_data(
        tags: List[str], license: Optional[str], dataset: Optional[str], metrics: Optional[Mapping[str, Any]],
        base_model: Optional[str], model_name: str, split: Optional[str], library_name: str = 'timm',
):
    from huggingface_hub import ModelCardData

    hub_id, _ = dataset_reference(dataset)  # local data stays in the card's body only
    return ModelCardData(
        library_name=library_name,
        license=license or 'apache-2.0',
        tags=tags,
        datasets=[hub_id] if hub_id else None,
        metrics=sorted({_accuracy_metric(k)[0] for k in metrics or {} if _accuracy_metric(k)}) or None,
        base_model=base_model or None,
        pipeline_tag='image-classification',
        model_name=model_name,
        eval_results=_eval_results(metrics, dataset, split),
    )


def render_model_card(
        pretrained_cfg: Dict[str, Any],
        num_features: int,
        repo_id: str = 'ORG/NAME',
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        training: Optional[str] = None,
        plots: Sequence[str] = (),
        license: Optional[str] = None,
        eval_split: Optional[str] = None,
        template: str = 'u1_model.md',
        base_model: Optional[str] = None,
) -> str:
    """Markdown (with the Hub's YAML metadata header) describing a u1 model.

    ``metrics`` are the final evaluation numbers (on ``dataset``, split ``eval_split``), ``training``
    a paragraph on how the model was trained, ``plots`` image paths relative to the card,
    ``base_model`` the Hub repo the weights started from. Everything comes from data (the saved
    ``config.json``), never from a rendered card.
    """
    from huggingface_hub import ModelCard

    architecture = pretrained_cfg['architecture']
    base_architecture = architecture[3:] if architecture.startswith('u1_') else architecture
    model_name = repo_id.split('/')[-1]
    card_data = _card_data(
        list(_TAGS), license or pretrained_cfg.get('license'), dataset, metrics, base_model, model_name, eval_split)
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path(template)),
        model_name=model_name,
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
        dataset_description=dataset_reference(dataset)[1],
        eval_split=eval_split,
        training=training,
        metrics=metrics or {},
        plots=list(plots),
        label_names=list(pretrained_cfg.get('label_names') or ()),
    )
    return str(card)


def render_memory_card(
        metadata: Mapping[str, Any],
        repo_id: str = 'ORG/NAME',
        path_in_repo: Optional[str] = None,
        backbone: Optional[str] = None,
        class_names: Sequence[str] = (),
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        plots: Sequence[str] = (),
        license: Optional[str] = None,
        eval_split: Optional[str] = None,
        template: str = 'u1_memory.md',
        base_model: Optional[str] = None,
) -> str:
    """Markdown (with the Hub's YAML metadata header) describing an angle-prototype memory.

    ``metadata`` is the memory's ``memory.json`` (backbone, layer, input size, bins, fingerprint,
    ...), shown as a table; ``backbone`` the spec of the model it was built from, ``base_model``
    its Hub repo id when it has one (the caller parses the spec: :func:`timm_u1.io.hub.parse_hub_ref`).
    """
    from huggingface_hub import ModelCard

    model_name = repo_id.split('/')[-1] + (f'/{path_in_repo}' if path_in_repo else '')
    tags = list(_TAGS) + ['angle-prototype-memory', 'training-free']
    card_data = _card_data(
        tags, license, dataset, metrics, base_model, model_name, eval_split, library_name='timm_u1')
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path(template)),
        model_name=model_name,
        repo_id=repo_id,
        path_in_repo=path_in_repo or '',
        backbone=backbone,
        settings={k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool)) or v is None},
        dataset=dataset,
        dataset_description=dataset_reference(dataset)[1],
        eval_split=eval_split,
        metrics=metrics or {},
        plots=list(plots),
        class_names=list(class_names),
    )
    return str(card)
