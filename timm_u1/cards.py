"""Model cards rendered from the Jinja templates in ``model_cards/``.

Two templates: ``u1_model.md`` for u1 models and ``u1_memory.md`` for angle-prototype memories.
Both carry the Hub's YAML metadata header (library, tags, datasets, metrics, base model, license
and, when a dataset and numeric metrics are known, a ``model-index`` with the evaluation results).
"""
import re
from numbers import Real
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ['template_path', 'render_model_card', 'retarget_model_card', 'render_memory_card', 'hub_model_id']

_PACKAGE_DIR = Path(__file__).resolve().parent
_TAGS = ['image-classification', 'timm', 'timm_u1', 'u1-symmetry-breaking']


def template_path(name: str) -> Path:
    """A template shipped in the wheel (``timm_u1/model_cards``) or, in a source checkout, ``model_cards/``."""
    for folder in (_PACKAGE_DIR / 'model_cards', _PACKAGE_DIR.parent / 'model_cards'):
        path = folder / name
        if path.is_file():
            return path
    raise FileNotFoundError(f'Model card template {name!r} not found next to {_PACKAGE_DIR}; reinstall timm_u1.')


def hub_model_id(spec: Optional[str]) -> Optional[str]:
    """The Hub repo id (``ORG/NAME``) in a model spec such as ``hf-hub:ORG/NAME@rev``, else None.

    Local folders, ``local-dir:`` specs and bare timm names have no repo id to link as a base model.
    """
    if not spec or spec.startswith(('local-dir:', '/', '.', '~')):
        return None
    spec = spec[len('hf-hub:'):] if spec.startswith('hf-hub:') else spec
    repo_id = spec.split('@', 1)[0]
    return repo_id if repo_id.count('/') == 1 and not Path(repo_id).exists() else None


def _dataset_id(dataset: Optional[str]) -> Optional[str]:
    """``dataset`` when it can name a dataset in the Hub metadata (``digits``, ``ORG/NAME``), not a local path."""
    if dataset and re.fullmatch(r'\w[\w.-]*(/\w[\w.-]*)?', dataset) and not Path(dataset).exists():
        return dataset
    return None


def _eval_results(metrics: Optional[Mapping[str, Any]], dataset: Optional[str], split: Optional[str]):
    """``model-index`` entries for the numeric metrics, which the Hub needs a dataset to attach to."""
    from huggingface_hub import EvalResult

    if not metrics or not dataset:
        return None
    results = [
        EvalResult(
            task_type='image-classification', dataset_type=dataset, dataset_name=dataset,
            dataset_split=split, metric_type=key, metric_name=key, metric_value=float(value))
        for key, value in metrics.items() if isinstance(value, Real) and not isinstance(value, bool)]
    return results or None


def _card_data(
        tags: List[str], license: Optional[str], dataset: Optional[str], metrics: Optional[Mapping[str, Any]],
        base_model: Optional[str], model_name: str, split: Optional[str], library_name: str = 'timm',
):
    from huggingface_hub import ModelCardData

    dataset = _dataset_id(dataset)  # a local path stays in the card's body only
    return ModelCardData(
        library_name=library_name,
        license=license or 'apache-2.0',
        tags=tags,
        datasets=[dataset] if dataset else None,
        metrics=sorted(metrics) if metrics else None,
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
) -> str:
    """Markdown (with the Hub's YAML metadata header) describing a u1 model.

    ``metrics`` are the final evaluation numbers (on ``dataset``, split ``eval_split``), ``training``
    a paragraph on how the model was trained, ``plots`` image paths relative to the card.
    """
    from huggingface_hub import ModelCard

    architecture = pretrained_cfg['architecture']
    base_architecture = architecture[3:] if architecture.startswith('u1_') else architecture
    base_model = pretrained_cfg.get('hf_hub_id') if pretrained_cfg.get('source') != 'local-dir' else None
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
        eval_split=eval_split,
        training=training,
        metrics=metrics or {},
        plots=list(plots),
        label_names=list(pretrained_cfg.get('label_names') or ()),
    )
    return str(card)


def _section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a card, '' if it has none."""
    match = re.search(rf'^## {re.escape(title)}\n(.*?)(?=^## |\Z)', text, re.S | re.M)
    return match.group(1).strip() if match else ''


def _table_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def retarget_model_card(card_text: str, config: Mapping[str, Any], repo_id: str) -> str:
    """Re-render a u1 model card for ``repo_id``, keeping its dataset, metrics, training text and plots.

    ``save_pretrained`` writes the card before the repo id is known (e.g. ``scripts/train.py``'s
    export), so its title and loading snippet name a placeholder; pushing retargets it. ``config``
    is the folder's ``config.json``. Cards not rendered from ``u1_model.md`` come back unchanged.
    """
    from huggingface_hub import ModelCard

    card = ModelCard(card_text)
    if 'timm_u1' not in (card.data.tags or []) or 'angle-prototype-memory' in card.data.tags:
        return card_text
    body = card.text
    rows = re.findall(r'^\| (.+?) \| (.+?) \|$', _section(body, 'Results'), re.M)
    metrics = {key: _table_value(value) for key, value in rows if key != 'metric'}
    split = re.search(r'\(evaluated on the `(.+?)` split\)', body)
    dataset = re.search(r'^- \*\*Dataset:\*\* (.+?)(?: \(evaluated on|$)', body, re.M)
    cfg = dict(config['pretrained_cfg'], architecture=config['architecture'])
    if config.get('label_names'):
        cfg['label_names'] = config['label_names']
    return render_model_card(
        cfg, num_features=config.get('num_features'), repo_id=repo_id, metrics=metrics or None,
        dataset=dataset.group(1) if dataset else None, training=_section(body, 'How it was trained') or None,
        plots=re.findall(r'^!\[.*?\]\((.+?)\)$', _section(body, 'Plots'), re.M), license=card.data.license,
        eval_split=split.group(1) if split else None)


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
) -> str:
    """Markdown (with the Hub's YAML metadata header) describing an angle-prototype memory.

    ``metadata`` is the memory's ``memory.json`` (backbone, layer, input size, bins, fingerprint,
    ...), shown as a table; ``backbone`` the spec of the model it was built from (linked as the
    base model when it names a Hub repo).
    """
    from huggingface_hub import ModelCard

    model_name = repo_id.split('/')[-1] + (f'/{path_in_repo}' if path_in_repo else '')
    tags = list(_TAGS) + ['angle-prototype-memory', 'training-free']
    card_data = _card_data(
        tags, license, dataset, metrics, hub_model_id(backbone), model_name, eval_split, library_name='timm_u1')
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path(template)),
        model_name=model_name,
        repo_id=repo_id,
        path_in_repo=path_in_repo or '',
        backbone=backbone,
        settings={k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool)) or v is None},
        dataset=dataset,
        eval_split=eval_split,
        metrics=metrics or {},
        plots=list(plots),
        class_names=list(class_names),
    )
    return str(card)
