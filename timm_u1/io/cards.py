"""Model cards rendered from the Jinja templates in ``model_cards/``, always from data, never from a rendered card.

Two templates: ``u1_model.md`` for u1 models and ``u1_memory.md`` for angle-prototype memories. Both
carry the Hub's YAML metadata header (library, tags, datasets, metrics, base model, licence and, for
data on the Hub, a ``model-index`` with the accuracies in percent on the split they were measured on).
"""
import logging
import re
from numbers import Real
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .config import RECORD_KEY, twin_name, u1_settings

__all__ = [
    'template_path', 'render_model_card', 'render_memory_card', 'render_card', 'dataset_reference',
    'check_license', 'LOCAL_DATASETS', 'HUB_LICENSES',
]

_logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # timm_u1/
_TAGS = ['image-classification', 'timm', 'timm_u1', 'u1-symmetry-breaking']

# the licence identifiers the Hub's metadata accepts (huggingface.co/docs/hub/repositories-licenses);
# huggingface_hub has no public list of them
HUB_LICENSES = frozenset('''
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c
ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib
pddl lgpl-lr deepfloyd-if-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other
'''.split())


def check_license(license: Optional[str]) -> Optional[str]:
    """``license`` if the Hub knows it (None passes), else a ``ValueError`` naming the fix."""
    if license is None or license in HUB_LICENSES:
        return license
    close = sorted(x for x in HUB_LICENSES if x.startswith(str(license).lower()[:4]))[:5]
    raise ValueError(
        f'licence {license!r} is not one the Hub knows; give a Hub licence id such as apache-2.0, mit, '
        f'cc-by-4.0{" (close: " + ", ".join(close) + ")" if close else ""}, or "other".')


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
_SPLIT_PREFIX = re.compile(r'(?P<split>train|test|val|validation|eval)_')


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


def _split_of(key: str, eval_split: Optional[str]) -> str:
    """The split a metric was measured on: ``test_accuracy_...`` says it; others are the card's ``eval_split``."""
    match = _SPLIT_PREFIX.match(key)
    return match.group('split') if match else (eval_split or 'unspecified')


def _eval_results(metrics: Optional[Mapping[str, Any]], dataset: Optional[str], split: Optional[str]):
    """``model-index`` entries (accuracies, in percent) for data on the Hub; none for local data, which
    has no Hub dataset id to name (its results are in the card's body)."""
    from huggingface_hub import EvalResult

    hub_id, _ = dataset_reference(dataset)
    if not metrics or not hub_id:
        return None
    results = [
        EvalResult(
            task_type='image-classification', task_name='Image Classification', dataset_type=hub_id,
            dataset_name=hub_id, dataset_split=_split_of(key, split), metric_type=_accuracy_metric(key)[0],
            metric_name=_accuracy_metric(key)[1], metric_value=float(value))
        for key, value in metrics.items()
        if _accuracy_metric(key) and isinstance(value, Real) and not isinstance(value, bool)]
    return results or None


def _card_data(
        tags: List[str], license: Optional[str], dataset: Optional[str], metrics: Optional[Mapping[str, Any]],
        base_model: Optional[str], model_name: str, split: Optional[str], library_name: str = 'timm',
):
    from huggingface_hub import ModelCardData

    hub_id, _ = dataset_reference(dataset)
    if license is None:
        _logger.warning('%s: no licence given; the card names none (pass license=, or --license).', model_name)
    return ModelCardData(
        library_name=library_name,
        license=license,
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
        params: Optional[int] = None,
        gmacs: Optional[float] = None,
) -> str:
    """Markdown (with the Hub's YAML metadata header) describing a u1 model.

    ``metrics`` are the final evaluation numbers in percent (on ``dataset``, split ``eval_split``),
    ``training`` a paragraph on how the model was trained, ``plots`` image paths relative to the card,
    ``base_model`` the Hub repo the weights started from, ``license`` a Hub licence id (default: the
    base weights' licence, when timm knows it), ``params`` / ``gmacs`` its size and cost.
    """
    from huggingface_hub import ModelCard

    architecture = pretrained_cfg['architecture']
    base_architecture = architecture[3:] if architecture.startswith('u1_') else architecture
    model_name = repo_id.split('/')[-1]
    inherited = pretrained_cfg.get('license')  # timm's licence of the base weights, when it has one
    license = check_license(license) if license else inherited if inherited in HUB_LICENSES else None
    card_data = _card_data(list(_TAGS), license, dataset, metrics, base_model, model_name, eval_split)
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
        params=f'{params / 1e6:.2f}' if params is not None else None,
        gmacs=f'{gmacs:.3g}' if gmacs is not None else None,
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


def render_card(config: Mapping[str, Any], repo_id: str) -> str:
    """The model card of a saved folder, rendered from its ``config.json`` alone."""
    record = config.get(RECORD_KEY) or {}
    card = record.get('card') or {}
    cfg = dict(config.get('pretrained_cfg') or {}, architecture=twin_name(config))
    cfg['num_classes'] = config.get('num_classes', cfg.get('num_classes'))
    if config.get('label_names'):
        cfg['label_names'] = config['label_names']
    cfg['u1'] = u1_settings(config)
    return render_model_card(
        cfg, num_features=config.get('num_features'), repo_id=repo_id, metrics=card.get('metrics'),
        dataset=card.get('dataset'), training=card.get('training'), plots=card.get('plots') or (),
        license=card.get('license'), eval_split=card.get('eval_split'), base_model=record.get('base_model'),
        params=record.get('params'), gmacs=record.get('gmacs'))


def _percent(metrics: Mapping[str, Any]) -> Dict[str, Any]:
    """A memory's accuracies are fractions (``memory.json``); cards give them in percent, as model cards do."""
    return {k: round(100 * v, 2) if _accuracy_metric(k) and isinstance(v, Real) and not isinstance(v, bool) else v
            for k, v in metrics.items()}


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
    ...), shown as a table; ``metrics`` its accuracies as fractions (shown in percent, each on the
    split its name starts with: ``test_accuracy_prototype``); ``backbone`` the spec of the model it was
    built from, ``base_model`` its Hub repo id when it has one. ``path_in_repo`` is the memory's
    folder in the repo: the card is meant for the repo's root (the Hub reads metadata there only).
    """
    from huggingface_hub import ModelCard

    model_name = repo_id.split('/')[-1]
    local = bool(backbone) and base_model is None and ('/' in backbone or backbone.startswith(('local-dir:', '.', '~')))
    if local:  # a path on the builder's machine: name the folder, not where it was
        backbone = Path(backbone.partition('local-dir:')[2] or backbone).name
    tags = list(_TAGS) + ['angle-prototype-memory', 'training-free']
    metrics = _percent(metrics or {})
    card_data = _card_data(
        tags, check_license(license), dataset, metrics, base_model, model_name, eval_split, library_name='timm_u1')
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path(template)),
        model_name=model_name,
        repo_id=repo_id,
        path_in_repo=path_in_repo or '',
        backbone=backbone,
        backbone_local=local,
        settings={k: v for k, v in metadata.items()
                  if (isinstance(v, (str, int, float, bool)) or v is None) and not (local and k == 'backbone')},
        dataset=dataset,
        dataset_description=dataset_reference(dataset)[1],
        eval_split=eval_split,
        metrics=metrics,
        plots=list(plots),
        class_names=list(class_names),
    )
    return str(card)
