"""What a run reports as it goes: ``metrics.jsonl`` (one record per epoch) and the experiment trackers of
Accelerate's ``log_with`` (TensorBoard, W&B, trackio) that people watch a run with."""
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Union

from ..files import write_text
from .config import TRACKERS

__all__ = [
    'METRICS_NAME', 'LOGS_NAME', 'MetricsLog', 'installed_trackers', 'resolve_trackers', 'tracker_config', 'scalars',
]

_logger = logging.getLogger(__name__)

METRICS_NAME = 'metrics.jsonl'
LOGS_NAME = 'logs'  # OUTPUT/logs/<run name>/: the trackers' local files (TensorBoard's event files)

PathLike = Union[str, os.PathLike]

# the module each tracker needs (TensorBoard: torch.utils.tensorboard writes through the tensorboard package)
_TRACKER_MODULES = {'tensorboard': 'tensorboard', 'wandb': 'wandb', 'trackio': 'trackio'}


class MetricsLog:
    """Metrics as JSON lines, one record per evaluation, each flushed to disk when written."""

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def read(self) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding='utf-8').splitlines()
        records = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # a crash during append can tear the last line only; anything else is corruption
                if n != len(lines):
                    raise ValueError(f'{self.path}:{n} is not valid JSON; the metrics log is corrupt.')
                continue
            if not isinstance(record, dict) or not isinstance(record.get('epoch', 0), int):
                raise ValueError(f'{self.path}:{n} is not a metrics record (an object with an integer "epoch").')
            records.append(record)
        return records

    def append(self, record: Dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(record) + '\n')
            f.flush()
            os.fsync(f.fileno())

    def truncate(self, num_epochs: int) -> None:
        """Keep only the records of the first ``num_epochs`` epochs (those a checkpoint covers)."""
        kept = [r for r in self.read() if r.get('epoch', 0) < num_epochs]
        write_text(self.path, ''.join(json.dumps(r) + '\n' for r in kept))


def installed_trackers() -> List[str]:
    """The trackers of :data:`~timm_u1.training.config.TRACKERS` whose package is installed."""
    return [name for name in TRACKERS if importlib.util.find_spec(_TRACKER_MODULES[name]) is not None]


def resolve_trackers(names: Iterable[str]) -> List[str]:
    """``names`` with 'all' expanded to the installed trackers; an unknown or missing one is a one-line error."""
    installed = installed_trackers()
    resolved: List[str] = []
    for name in names:
        if name == 'all':
            if not installed:
                raise ValueError(f'--log-with all: no tracker is installed (pip install tensorboard, or one of '
                                 f'{", ".join(TRACKERS)}).')
            chosen = installed
        elif name not in TRACKERS:
            raise ValueError(f'--log-with {name}: not a tracker; choose from {", ".join(TRACKERS)} or all.')
        elif name not in installed:
            raise ValueError(
                f'--log-with {name}: {_TRACKER_MODULES[name]} is not installed (pip install {_TRACKER_MODULES[name]}); '
                f'installed: {", ".join(installed) or "none"}.')
        else:
            chosen = [name]
        resolved += [c for c in chosen if c not in resolved]
    return resolved


def tracker_config(settings: Mapping[str, Any]) -> Dict[str, Union[int, float, str, bool]]:
    """The run's settings as trackers take hyper-parameters: numbers, strings and booleans only
    (TensorBoard's ``add_hparams`` refuses None, tuples and paths)."""
    plain: Dict[str, Union[int, float, str, bool]] = {}
    for key, value in settings.items():
        if isinstance(value, (bool, int, float, str)):
            plain[key] = value
        elif isinstance(value, (list, tuple)):
            plain[key] = ' '.join(str(v) for v in value)
        else:
            plain[key] = str(value)
    return plain


def scalars(record: Mapping[str, Any]) -> Dict[str, float]:
    """An epoch's metrics record as tracker scalars: ``train_loss`` -> ``train/loss``, ``eval_top1`` ->
    ``eval/top1``, ``eval_ema_top1`` -> ``eval/ema_top1``, ``lr`` -> ``train/lr`` (the step is the x axis)."""
    out = {}
    for key, value in record.items():
        if key == 'step' or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key == 'lr':
            key = 'train_lr'
        prefix, _, rest = key.partition('_')
        out[f'{prefix}/{rest}' if prefix in ('train', 'eval') else key] = float(value)
    return out
