"""The analysis job: the sombrero and symmetry-breaking statistics of one layer of a model over a dataset, streamed
in one resumable, locked, shardable pass (:class:`timm_u1.runs.StreamPass`), then its controls, verdicts and report
(docs/analysis.md)."""
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..runs import RunFolder
from ..runs.shard import gather, process_group
from ..runs.shard import device as process_device
from ..runs.stream import StreamPass, pass_identity
from ..version import __version__
from .control_tap import ControlTap
from .logits import batch_logits, logit_classes_mismatch
from .probe import ActivationProbe
from .report import AnalysisReport, write_report
from .sombrero import SombreroStatistics

__all__ = ['AnalysisReport', 'analyze', 'collect_statistics', 'write_report', 'DEFAULT_DATA', 'DEFAULT_SPLITS']

_logger = logging.getLogger(__name__)

# the README's main job: a real ImageNet CNN on real photographs and digits, nothing downloaded
DEFAULT_DATA = ('photos', 'digits')
# default split per embedded source: the 450 held-out digits keep the default run to a few minutes
DEFAULT_SPLITS = {'digits': 'test'}
# seconds between checkpoints of the running statistics
CHECKPOINT_EVERY = 20.0
_STATE_NAME = 'statistics_state'
_STATE_FILE = f'{_STATE_NAME}.safetensors'

Batch = Tuple[Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor], int, Optional[Callable[[], torch.Tensor]]]


def _ordered(ds, limit: Optional[int], seed: int):
    """The dataset in a seeded random order, cut to ``limit``: batches then mix classes, which the
    within-batch permutation test needs, and ``limit`` takes a random sample, not the first class."""
    n = len(ds)
    if n == 0:
        raise ValueError('The dataset is empty; nothing to analyse.')
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    if limit is not None:
        if limit < 1:
            raise ValueError(f'limit must be >= 1, got {limit}.')
        order = order[:limit]
    return ds.select(order)


@torch.inference_mode()
def collect_statistics(
        model: nn.Module,
        loader: torch.utils.data.DataLoader,
        layer: Union[None, int, str] = None,
        class_names: Optional[Sequence[str]] = None,
        permutations: int = 999,
        seed: int = 0,
        device: Union[str, torch.device] = 'cpu',
        progress: bool = True,
        stats: Optional[SombreroStatistics] = None,
        on_batch: Optional[Callable[[SombreroStatistics, int], None]] = None,
        unreadable: Optional[List[str]] = None,
        on_maps: Optional[Callable[[Batch], None]] = None,
) -> SombreroStatistics:
    """Stream ``loader`` through ``layer`` of ``model``.

    Batches are (images, labels) with label -1 for unlabelled images, or (images or None, labels,
    messages) where the messages describe images that could not be read (then skipped).

    Args:
        stats: Statistics to continue (e.g. restored from a checkpoint); a new one otherwise.
        on_batch: Called as ``on_batch(stats, images_done)`` after each batch (checkpointing);
            ``images_done`` counts the unreadable images too.
        unreadable: Collects the messages of the skipped images.
        on_maps: Called with (images or None, labels, maps or None, images the batch held, unreadable ones
            included, a function giving the batch's logits or None) for every batch, before its statistics are
            added.
    """
    if stats is None:
        stats = SombreroStatistics(
            num_classes=len(class_names or ()), class_names=class_names, permutations=permutations, seed=seed)
    model.eval().to(device)
    from tqdm.auto import tqdm

    done = 0
    total = len(loader.dataset) if hasattr(loader.dataset, '__len__') else None
    with ActivationProbe(model, layer) as probe, tqdm(
            total=total, unit='img', desc=f'analyze {probe.layer_name}', disable=not progress) as bar:
        first_batch = stats.next_batch  # the loader's first batch's index in the whole analysis order
        for step, (images, labels, *rest) in enumerate(loader):
            skipped = rest[0] if rest else []
            for message in skipped:
                _logger.warning('skipped: %s', message)
            if unreadable is not None:
                unreadable.extend(skipped)
            count = (len(images) if images is not None else 0) + len(skipped)
            x = images.to(device) if images is not None else None
            fmap = probe(x) if x is not None else None
            if on_maps is not None:
                on_maps((images, labels, fmap, count, batch_logits(model, probe, x) if x is not None else None))
            if fmap is not None:
                stats.next_batch = first_batch + step  # the batch's index: seeds its permutations
                try:
                    stats.update(fmap, labels)
                except ValueError as e:
                    raise ValueError(
                        f'{type(model).__name__} layer {probe.layer_name!r}, images {done}..{done + count - 1} '
                        f'of this run: {e}') from e
            # a batch of unreadable images only still has its index: shards count batches alike
            stats.next_batch = first_batch + step + 1
            done += count
            bar.update(count)
            if on_batch is not None:
                on_batch(stats, done)
    return stats


def _model_name(model: nn.Module) -> str:
    """'architecture.tag' from the model's pretrained_cfg, as timm names pretrained models."""
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    arch = cfg.get('architecture') or type(model).__name__
    return f"{arch}.{cfg['tag']}" if cfg.get('tag') else arch


def _model_meta(model: nn.Module, spec: Optional[str], layer: str, fmap_shape) -> Dict[str, Any]:
    import timm.data

    data_cfg = timm.data.resolve_model_data_config(model)
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    return {
        'model': spec or _model_name(model),
        'architecture': cfg.get('architecture'),
        'tag': cfg.get('tag'),
        'layer': layer,
        'input_size': list(data_cfg['input_size']),
        'mean': list(data_cfg['mean']),
        'std': list(data_cfg['std']),
        'interpolation': data_cfg.get('interpolation'),
        'crop_pct': data_cfg.get('crop_pct'),
        'map_shape': list(fmap_shape) if fmap_shape is not None else None,
    }


def _load_model(model: Union[str, nn.Module, None], pretrained: Optional[bool]) -> Tuple[nn.Module, Optional[str], str]:
    """(model, its spec or None, how its weights were set) for a spec or a model object."""
    from ..io.factory import DEFAULT_MODEL, create_model_from_spec, default_pretrained

    if model is not None and not isinstance(model, str):
        return model, None, 'as given'
    spec = model or DEFAULT_MODEL
    loads_weights = default_pretrained(spec) if pretrained is None else pretrained
    return create_model_from_spec(spec, pretrained=pretrained), spec, 'pretrained' if loads_weights else 'random init'


def _load_data(data: Any, split: Optional[str], image_column: Optional[str], label_column: Optional[str]):
    """(source name, split, dataset) for a source name or a ``datasets.Dataset``."""
    from ..data import load_image_dataset

    if not isinstance(data, str):
        return data.info.dataset_name or 'dataset', split, data
    split = split if split is not None else DEFAULT_SPLITS.get(data)
    return data, split, load_image_dataset(data, split=split, image_column=image_column, label_column=label_column)


def refuse_output_inside_data(out: Union[str, os.PathLike], data: Any) -> None:
    """Refuse a report folder inside (or holding) the image folder ``data``: a later run would read its PNGs
    as images, or the report would land among the images."""
    if not isinstance(data, str) or not Path(os.path.expanduser(data)).is_dir():
        return
    folder, target = Path(os.path.expanduser(data)).resolve(), Path(out).expanduser().resolve()
    if target == folder or folder in target.parents:
        raise ValueError(f'The output folder {target} is inside the data folder {folder}: its plots would be read '
                         f'as images by the next run; choose an output folder outside {folder}.')


def analyze(
        model: Union[str, nn.Module] = None,
        data: Union[str, Any] = 'digits',
        layer: Union[None, int, str] = None,
        split: Optional[str] = None,
        image_column: Optional[str] = None,
        label_column: Optional[str] = None,
        batch_size: int = 32,
        limit: Optional[int] = None,
        out: Union[None, str, os.PathLike] = None,
        permutations: int = 999,
        seed: int = 0,
        num_workers: int = 0,
        device: Union[None, str, torch.device] = None,
        progress: bool = True,
        pretrained: Optional[bool] = None,
        plots: bool = True,
        overwrite: bool = False,
        controls: str = 'fast',
) -> AnalysisReport:
    """Sombrero and symmetry-breaking statistics of ``layer`` of ``model`` over ``data``.

    Args:
        model: A model spec for :func:`timm_u1.io.factory.create_model_from_spec` (timm or ``u1_`` name,
            ``hf-hub:``, ``local-dir:``, a folder; default: the offline ImageNet EfficientNet-Lite0),
            or a timm model.
        data: A source for :func:`timm_u1.data.load_image_dataset` (``'digits'``, ``'photos'``, an
            image folder, a ``save_to_disk`` folder, a Hub name) or a ``datasets.Dataset`` with an
            ``image`` (and optional ``label``) column.
        layer: None / ``'bottleneck'``, a ``feature_info`` index or name (see :func:`timm_u1.analysis.probe.layer_names`).
        split: Split of ``data`` (default: ``'test'`` for digits, else the source's default).
        image_column, label_column: the columns of ``data`` to read (default: found by type and name).
        limit: Analyse a random sample of this many images.
        out: Folder for ``report.json``, ``report.md`` and the plots (not inside an image folder ``data``).
        permutations: Label permutations of the symmetry-breaking test (0 = no test).
        seed: Seeds the image order (batches mix classes) and the permutations.
        device: Default: cpu, or Accelerate's device of the process when launched as several.
        pretrained: For a model spec: load its weights (default: False for plain timm names only).
        plots: Write the PNG plots with the report (needs matplotlib).
        overwrite: Start afresh over an unfinished run in ``out`` of other settings, data or weights (by
            default it is refused, naming what differs).
        controls: ``'none'``, ``'fast'`` or ``'full'``: the controls and a verdict per claim, computed on the
            first images of the analysis order (``'fast'``: 192 images, 5 random seeds; ``'full'``: every
            image, 10 seeds).
    """
    from ..data import class_names as dataset_class_names
    from .controls import resolve_level

    level = resolve_level(controls)  # a bad value fails before any model or data is loaded
    if out is not None:
        refuse_output_inside_data(out, data)
    run_folder = RunFolder(out, '--output') if out is not None else None  # before any work: fail fast
    model, spec, weights = _load_model(model, pretrained)
    probe_layer = ActivationProbe(model, layer).layer_name  # validate the layer before reading any data
    source, split, ds = _load_data(data, split, image_column, label_column)
    names = dataset_class_names(ds)
    ordered = _ordered(ds, limit, seed)
    settings = dict(model=spec or _model_name(model), layer=probe_layer, data=source, split=split,
                    image_column=image_column, label_column=label_column, permutations=permutations, seed=seed,
                    timm_u1=__version__)
    # what the images and the weights are (a retrained model or replaced images never resume an old run); every
    # process analyses the main process's weights (random initialisations differ)
    identity = pass_identity(settings, data=ordered, model=model, include_head=True)
    job = _Job(model, probe_layer, names, ordered, batch_size, permutations, seed, num_workers,
               device if device is not None else process_device(), progress and process_group()[0] == 0)
    meta = _model_meta(model, spec, probe_layer, None)
    meta.update(weights=weights, data=source, split=split, limit=limit, labelled=names is not None,
                classes=len(names or ()), batch_size=batch_size, seed=seed, timm_u1_version=__version__)
    with StreamPass(run_folder, _STATE_NAME, len(ordered), batch_size, identity, every=CHECKPOINT_EVERY,
                    overwrite=overwrite) as stream:
        report = job.run(stream, meta, level, controls)
        if run_folder is not None and report.meta:
            report.paths = write_report(report, run_folder.path, plots=plots)
            stream.finish()  # the report now holds everything the checkpoints did
        return report


class _Job:
    """One analysis' model, data and settings, and its two parts: the statistics pass and the controls."""

    def __init__(self, model, layer, names, ordered, batch_size, permutations, seed, num_workers, device, progress):
        self.model, self.layer, self.names, self.ordered = model, layer, names, ordered
        self.batch_size, self.permutations, self.seed = batch_size, permutations, seed
        self.num_workers, self.device, self.progress = num_workers, device, progress

    def run(self, stream: StreamPass, meta: Dict[str, Any], level, controls: str) -> AnalysisReport:
        """The statistics pass, then (on the main process) the controls: the report, not yet written."""
        tap = self.control_tap(level, stream)
        stats, unreadable = self.statistics(stream, tap)
        if stats is None:
            return AnalysisReport({}, {}, None)  # not the main process of a launch: it writes nothing
        if stats.images == 0 and unreadable:
            raise ValueError(f"None of the {len(self.ordered)} images of {meta['data']!r} could be read; the first: "
                             f'{unreadable[0]}')
        meta = dict(meta, map_shape=list(stats.map_shape), images=stats.images, unreadable=unreadable,
                    permutations=stats.permutations, **({'processes': stream.world} if stream.world > 1 else {}))
        report = AnalysisReport(meta, stats.result(), stats)
        if level is not None:
            report.controls, report.verdicts = self.controls(level, controls, tap)
            meta['controls'] = controls
        return report

    def loader(self, start: int, stop: int) -> torch.utils.data.DataLoader:
        from ..data import make_loader

        # unreadable images are skipped and reported instead of ending the run
        return make_loader(self.ordered.select(range(start, stop)), self.model, batch_size=self.batch_size,
                           num_workers=self.num_workers, skip_unreadable=True)

    def control_tap(self, level, stream: StreamPass) -> Optional[ControlTap]:
        """A tap that hands the statistics pass's maps of the control images to the controls, when this pass reads
        them from the first (the main process of a run that is not resumed); None otherwise."""
        if level is None or stream.rank != 0:
            return None
        import timm.data

        cfg = timm.data.resolve_model_data_config(self.model)
        count = len(self.ordered) if level.images is None else min(level.images, len(self.ordered))
        num_classes = len(self.names or ())
        return ControlTap(num_classes, level, cfg['mean'], cfg['std'], self.seed, count, self.batch_size,
                          logits=logit_classes_mismatch(self.model, num_classes) is None)

    def statistics(self, stream: StreamPass, tap: Optional[ControlTap]) -> Tuple[Optional[SombreroStatistics], List[str]]:
        """The statistics of every image (merged over the processes on the main one; None on the others) and the
        messages of the unreadable images."""
        args = dict(num_classes=len(self.names or ()), class_names=self.names, permutations=self.permutations,
                    seed=self.seed)
        extent = None
        if stream.shard.start > 0 and len(stream.shard):
            # the hue-plane histogram's extent comes from the first batch of the whole order
            extent = _first_batch_extent(self.model, self.loader(0, len(self.ordered)), self.layer, self.device)
        stats = SombreroStatistics(density_extent=extent, **args)
        stats.next_batch = stream.shard.start // self.batch_size  # seeds the permutations as in a one-process run
        unreadable = list(stream.restore(stats).get('unreadable', []))
        if stream.done and tap is not None:
            tap.close()  # resumed: the first control images were analysed by an earlier process
        if len(stream.remaining):
            collect_statistics(
                self.model, self.loader(stream.remaining.start, stream.remaining.stop), self.layer, self.names,
                device=self.device, progress=self.progress, stats=stats, unreadable=unreadable,
                on_batch=_Advance(stream, unreadable), on_maps=tap)
        parts = stream.gather(stats, {'unreadable': unreadable})
        messages = gather(unreadable) if stream.world > 1 else [unreadable]
        if parts is None:
            return None, []
        if len(parts) > 1:
            stats = SombreroStatistics(**args).merge(parts)
        return stats, [message for part in messages for message in part]

    def controls(self, level, name: str, tap: ControlTap) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """The controls on the first images of the analysis order (those of a one-process run), and the verdicts."""
        from .claims import verdicts
        from .controls import finish_controls

        trained, data = tap.finish(self.model, self.layer, self.loader, self.device)
        section = finish_controls(self.model, data, trained, self.layer, name, tap.mean, tap.std, self.seed,
                                  self.device, self.progress)
        per_image = section['concentration_model_vs_input']['per_image']
        if 'name' in self.ordered.column_names:  # e.g. the photos: which image is which
            names = [str(name) for name in self.ordered.select(range(tap.count))['name']]
            if len(names) == len(per_image['model']):  # (not when an unreadable image was left out)
                per_image['names'] = names
        return section, verdicts(section)


class _Advance:
    """``on_batch`` of the statistics pass: counts the images done in the stream (checkpointing it when due)."""

    def __init__(self, stream: StreamPass, unreadable: List[str]):
        self.stream, self.unreadable, self.last = stream, unreadable, 0

    def __call__(self, stats: SombreroStatistics, done: int) -> None:
        self.stream.advance(stats, done - self.last, {'unreadable': self.unreadable})
        self.last = done


@torch.inference_mode()
def _first_batch_extent(model: nn.Module, loader, layer: str, device) -> Optional[float]:
    """The hue-plane extent a one-process run takes from its first batch with readable images."""
    model.eval().to(device)
    with ActivationProbe(model, layer) as probe:
        for images, labels, *_ in loader:
            if images is not None:
                first = SombreroStatistics(permutations=0)
                first.update(probe(images.to(device)))
                return first.extent
    return None
