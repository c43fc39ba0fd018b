"""What a training run depends on: :class:`TrainConfig`, the range of every setting, and which settings
a resumed run may change."""
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..core.u1 import U1Config
from ..io.cards import check_license

__all__ = ['TrainConfig', 'RESUMABLE_SETTINGS', 'BOUNDS', 'SCHEDULERS', 'TRACKERS', 'bounds_text']

_U1_DEFAULTS = U1Config()

# timm schedulers the loop can drive: 'plateau' needs a metric per step and is left out
SCHEDULERS = ('cosine', 'tanh', 'step', 'multistep', 'poly')
# experiment trackers of Accelerate's log_with that a run can report to ('all': every installed one)
TRACKERS = ('tensorboard', 'wandb', 'trackio')

# (low, high, low_open, high_open) of every numeric setting (None: unbounded); read by check() and by
# the command line's option types, so a range is written once
BOUNDS: Dict[str, Tuple[Optional[float], Optional[float], bool, bool]] = {
    'img_size': (1, None, False, False),
    'crop_pct': (0, 1, True, False),
    'batch_size': (1, None, False, False),
    'workers': (0, None, False, False),
    'scale': (0, 1, True, False),
    'hflip': (0, 1, False, False),
    'color_jitter': (0, None, False, False),
    'drop_rate': (0, 1, False, True),
    'drop_path': (0, 1, False, True),
    'hue_weight': (0, None, False, False),
    'smoothing': (0, 1, False, True),
    'mixup': (0, None, False, False),
    'cutmix': (0, None, False, False),
    'epochs': (1, None, False, False),
    'lr': (0, None, True, False),
    'weight_decay': (0, None, False, False),
    'warmup_epochs': (0, None, False, False),
    'clip_grad': (0, None, True, False),
    'grad_accum': (1, None, False, False),
    'model_ema_decay': (0, 1, True, True),
    'seed': (0, 2 ** 32 - 1, False, False),  # numpy's legacy and torch's generators take seeds below 2**32
    'log_interval': (1, None, False, False),
    'checkpoint_every_steps': (0, None, False, False),
    'keep_checkpoints': (1, None, False, False),
}


@dataclass
class TrainConfig:
    """Everything a training run depends on; the fields are ``timm-u1 train``'s options."""
    output: Union[str, os.PathLike]  # run folder: checkpoints, metrics, export
    # data
    data: str = 'digits'  # "digits", a Hub dataset name, an image folder or a save_to_disk folder
    train_split: str = 'train'
    eval_split: Optional[str] = None  # None: test if labelled, else validation (data.choose_eval_split)
    eval_data: Optional[str] = None  # where the eval split comes from (default: data)
    image_column: Optional[str] = None  # default: found by type and name (data.load_image_dataset)
    label_column: Optional[str] = None  # e.g. 'coarse_label'; default: found by type and name
    streaming: bool = False  # read both splits as datasets.IterableDataset (larger than memory)
    img_size: Optional[int] = None  # default: the model's
    crop_pct: Optional[float] = None  # eval center-crop fraction (default: the model's)
    batch_size: int = 64  # per process
    workers: int = 0
    # augmentation (timm's create_transform)
    no_aug: bool = False
    scale: Tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    color_jitter: float = 0.4
    aa: Optional[str] = None  # timm's auto-augment / RandAugment policy, e.g. 'rand-m9-mstd0.5'
    # model
    model: str = 'resnet10t'
    pretrained: bool = False
    drop_rate: float = 0.0
    drop_path: float = 0.0  # stochastic depth rate (timm's drop_path_rate)
    model_ema: bool = False  # keep an EMA of the weights (timm's ModelEmaV3); it is evaluated and exported
    model_ema_decay: float = 0.9998
    torchcompile: Optional[str] = None  # a torch.compile backend ('inductor', ...); None: Accelerate's setting
    # loss: the U(1) settings' defaults are U1Config's (TrainConfig.u1_config() builds one)
    loss: str = 'u1'  # 'ce' = plain cross-entropy (hue weight 0)
    hue_weight: float = _U1_DEFAULTS.hue_weight
    hue_input: str = _U1_DEFAULTS.hue_input
    spatial: bool = _U1_DEFAULTS.spatial
    smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    # optimisation
    epochs: int = 10
    opt: str = 'adamw'
    lr: float = 1e-3
    weight_decay: float = 0.05
    sched: str = 'cosine'
    warmup_epochs: int = 0
    clip_grad: Optional[float] = None
    grad_accum: int = 1
    # None: Accelerate decides (accelerate launch --mixed_precision, `accelerate config`, its env);
    # 'auto': bf16 or fp16 on a GPU that has it, full precision on CPU
    mixed_precision: Optional[str] = None
    # run
    seed: int = 0
    resume: bool = False
    no_export: bool = False
    no_progress: bool = False
    log_with: Tuple[str, ...] = field(default_factory=tuple)  # trackers (TRACKERS or 'all')
    log_interval: int = 50  # optimizer updates between two tracker records of the training loss
    checkpoint_every_steps: int = 0  # also checkpoint every N updates inside an epoch (0: at epoch ends only)
    keep_checkpoints: int = 1  # the newest N checkpoints are kept
    license: Optional[str] = None  # the export's Hub licence id (default: the base weights' licence, when timm knows it)

    def __post_init__(self):
        self.output = Path(self.output)
        self.scale = tuple(self.scale)
        self.log_with = (self.log_with,) if isinstance(self.log_with, str) else tuple(self.log_with or ())
        if self.loss == 'ce':
            self.hue_weight = 0.0

    def u1_config(self) -> U1Config:
        """The run's U(1) settings (what the loss is built from and the export records)."""
        return U1Config(hue_weight=self.hue_weight, hue_input=self.hue_input, spatial=self.spatial)

    def check(self) -> None:
        """Refuse settings that cannot work, naming the field and the fix (the CLI checks them when parsed)."""
        for name, value in asdict(self).items():
            if name in BOUNDS and value is not None:
                for v in (value if isinstance(value, tuple) else (value,)):
                    _check_bound(name, v)
        if len(self.scale) != 2 or self.scale[0] > self.scale[1]:
            raise ValueError(f'--scale takes two fractions MIN MAX with MIN <= MAX, got {list(self.scale)}.')
        if self.loss not in ('u1', 'ce'):
            raise ValueError(f"loss must be 'u1' or 'ce', got {self.loss!r}.")
        self.u1_config()  # validates hue_input
        check_license(self.license)
        if self.spatial and not self.hue_weight:
            raise ValueError('--spatial is a form of the hue loss; it needs --loss u1 and --hue-weight > 0.')
        if self.sched not in SCHEDULERS:
            raise ValueError(f'sched must be one of {", ".join(SCHEDULERS)}, got {self.sched!r}.')
        for name in ('model', 'opt', 'data', 'train_split', 'eval_split'):
            if not str(getattr(self, name)).strip():
                raise ValueError(f'{name} must not be empty.')
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise ValueError(
                f'mixup/cutmix pair images within a batch; --batch-size must be even, got {self.batch_size}.')
        if self.mixed_precision not in (None, 'auto', 'no', 'fp16', 'bf16'):
            raise ValueError(
                f"mixed_precision must be None, 'auto', 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}.")
        unknown = set(self.log_with) - set(TRACKERS) - {'all'}
        if unknown:
            raise ValueError(f'log_with: unknown tracker {sorted(unknown)}; choose from {", ".join(TRACKERS)} or all.')
        if self.checkpoint_every_steps and self.streaming:
            raise ValueError('--checkpoint-every-steps needs a map-style dataset (a resumed stream cannot skip '
                             'to the middle of an epoch); drop --streaming or checkpoint at epoch ends.')

    def run_settings(self) -> Dict[str, Any]:
        """The settings a resumed run must share with its checkpoint: all but :data:`RESUMABLE_SETTINGS`."""
        return {k: v for k, v in asdict(self).items() if k not in RESUMABLE_SETTINGS}

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


# settings that do not change what a run computes, so a resumed run may change them: where it writes,
# how long it runs (a larger --epochs extends the run, on the schedule of the new length), progress
# bars, trackers, checkpoint frequency and retention, loader workers (the sampler orders the data and
# augmentation is seeded per batch; a stream's workers split it, so there they are in the identity) and
# the export at the end and its card's licence. mixed_precision and torchcompile are compared as resolved (what the run
# computes with), in the identity.
RESUMABLE_SETTINGS = ('output', 'epochs', 'resume', 'no_export', 'no_progress', 'workers', 'mixed_precision',
                      'torchcompile', 'log_with', 'log_interval', 'checkpoint_every_steps', 'keep_checkpoints', 'license')


def bounds_text(name: str) -> str:
    """The allowed range of a numeric setting, as in ``>= 1`` or ``in (0, 1]``."""
    low, high, low_open, high_open = BOUNDS[name]
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


def _check_bound(name: str, value: Any) -> None:
    low, high, low_open, high_open = BOUNDS[name]
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    bad = bad or (low is not None and (value <= low if low_open else value < low))
    bad = bad or (high is not None and (value >= high if high_open else value > high))
    if bad:
        raise ValueError(f'{name} must be a finite number {bounds_text(name)}, got {value!r}.')
