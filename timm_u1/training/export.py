"""What a run leaves for others: the trained model in the Hub layout (``export/``, ``best/``), described
so that timm's own data config of it preprocesses as the run's evaluation did."""
import hashlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from .config import TrainConfig

__all__ = ['export_pretrained_cfg', 'export_model', 'final_metrics', 'training_description', 'parameters_fingerprint']


def export_pretrained_cfg(model: nn.Module, data_config: Dict[str, Any], num_classes: int) -> None:
    """Make ``model.pretrained_cfg`` describe the run that trains it, so that timm's own data config of
    the export (``resolve_data_config(model=..., use_test_size=True)``, as validate.py resolves it)
    preprocesses as the run's evaluation did.

    The base model's test-time recommendations (``test_input_size``, ``test_crop_pct``) and the
    source of its weights (``tag``, ``hf_hub_id``, ``url``, ...) describe weights the export no longer
    has; ``pool_size`` is measured on the trained input size.
    """
    from ..data import DATA_CONFIG_KEYS

    cfg = model.pretrained_cfg
    for key in ('test_input_size', 'test_crop_pct', 'test_pool_size', 'tag', 'hf_hub_id', 'hf_hub_filename',
                'hf_hub_revision', 'url', 'file', 'source', 'state_dict'):
        cfg.pop(key, None)
    cfg.update({k: data_config[k] for k in DATA_CONFIG_KEYS if k in data_config}, num_classes=num_classes)
    was_training = model.training
    model.eval()  # no BatchNorm statistics move, no RNG is drawn
    try:
        with torch.no_grad():
            features = model.forward_features(torch.zeros(1, *data_config['input_size']))
    finally:
        model.train(was_training)
    if features.ndim == 4 and 'pool_size' in cfg:
        cfg['pool_size'] = tuple(features.shape[-2:])


def training_description(args: TrainConfig, num_train: Optional[int]) -> str:
    """One paragraph for the model card."""
    loss = ('cross-entropy' if not args.hue_weight else
            f'cross-entropy + {args.hue_weight} x U(1) hue loss on the {args.hue_input}'
            + (' (spatial, energy-weighted)' if args.spatial else ''))
    recipe = ''.join([
        f', auto-augment {args.aa}' if args.aa else '', f', drop-path {args.drop_path}' if args.drop_path else '',
        f', weights EMA (decay {args.model_ema_decay})' if args.model_ema else ''])
    return (
        f'Trained with timm-u1 train for {args.epochs} epochs on {num_train or "a stream of"} images of {args.data} '
        f'from {"pretrained weights" if args.pretrained else "scratch"} ({args.model}), {loss}, '
        f'label smoothing {args.smoothing}, mixup {args.mixup}, cutmix {args.cutmix}{recipe}, {args.opt} '
        f'lr {args.lr} weight decay {args.weight_decay} with a {args.sched} schedule, batch size '
        f'{args.batch_size} x {args.grad_accum} accumulation steps, seed {args.seed}.')


def final_metrics(record: Mapping[str, Any]) -> Dict[str, float]:
    """The evaluation metrics of a metrics record, as a model card lists them (``eval_top1`` -> ``top1``)."""
    return {k[len('eval_'):]: round(v, 4) for k, v in record.items()
            if k.startswith('eval_') and k != 'eval_num_samples' and isinstance(v, (int, float))}


def export_model(
        model: nn.Module, folder: Path, args: TrainConfig, classes: Sequence[str], record: Mapping[str, Any],
        num_train: Optional[int], plots: Sequence[str] = (),
) -> Path:
    """Save ``model`` in the Hub layout with the metrics of ``record``: ``timm.create_model("local-dir:FOLDER")``.

    ``plots``: figures (relative to ``folder``) that the model card shows.
    """
    from ..io.save import save_pretrained

    return save_pretrained(
        model, folder, label_names=list(classes), metrics=final_metrics(record), dataset=str(args.data),
        eval_split=args.eval_split, training=training_description(args, num_train), plots=plots,
        license=args.license)


def parameters_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's parameters (not its buffers: BatchNorm statistics are per process under DDP)."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(name.encode())
        digest.update(p.detach().to('cpu', torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
