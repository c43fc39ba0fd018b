"""V1 models in the project's pipeline: the photo-crops task (split by region, isotropic, settings kept),
a tiny `timm-u1 train` run that moves the pre-filter and the lateral kernel and resumes exactly, and
save / push / load round trips (save_pretrained, from_pretrained, local-dir:, hf-hub:) that are exact."""
import json
import math
import os

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import timm_u1
from timm_u1.data import builtin
from timm_u1.data import build_photo_crops
from timm_u1.early.fits import spectral_orientation
from timm_u1.early.stem import find_v1_stem

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def _photos():
    """Three synthetic 'photographs': one black on its left 75 % and white on the rest, one of horizontal
    stripes, one of noise (the trainer needs three classes)."""
    split = np.zeros((120, 200), np.uint8)
    split[:, 150:] = 255
    stripes = np.tile(((np.arange(160) // 4) % 2 * 255).astype(np.uint8)[:, None], (1, 240))
    noise = np.random.default_rng(0).integers(0, 256, (128, 160)).astype(np.uint8)
    return {'halves': Image.fromarray(split, 'L'), 'stripes': Image.fromarray(stripes, 'L'),
            'noise': Image.fromarray(noise, 'L')}


@pytest.fixture
def synthetic_photos(monkeypatch):
    monkeypatch.setattr(builtin, 'natural_photos', _photos)


def test_photo_crops_never_straddle_train_and_test_regions(synthetic_photos, tmp_path):
    import datasets

    folder = build_photo_crops(tmp_path / 'crops', size=16, train_crops=40, test_crops=20, zoom_range=(0.5, 1.5))
    dd = datasets.load_from_disk(str(folder))
    names = dd['train'].features['label'].names
    assert names == ['halves', 'noise', 'stripes'] and len(dd['train']) == 120 and len(dd['test']) == 60
    halves = names.index('halves')
    for split, value in (('train', 0), ('test', 255)):
        for row in dd[split]:
            if row['label'] == halves:  # every pixel of a crop comes from its own region
                assert np.all(np.asarray(row['image']) == value), split
    info = json.loads((folder / 'photo_crops.json').read_text())
    assert info['classes'] == names and info['left_out'] == []


def test_photo_crops_are_rotated_to_every_orientation(synthetic_photos, tmp_path):
    """Horizontal stripes come out at every angle: the crops' edge orientations cover [0, 180) evenly."""
    import datasets

    dd = datasets.load_from_disk(str(build_photo_crops(tmp_path / 'crops', size=24, train_crops=200, test_crops=1)))
    stripes = dd['train'].features['label'].names.index('stripes')
    angles = [spectral_orientation(np.asarray(r['image'], float)).edge_theta for r in dd['train'] if r['label'] == stripes]
    angles = np.asarray([a for a in angles if math.isfinite(a)])
    assert len(angles) > 150
    resultant = abs(np.exp(2j * angles).mean())  # 1: one orientation; ~0: all orientations alike
    assert resultant < 0.15
    counts = np.histogram(angles, bins=6, range=(0, math.pi))[0]
    assert counts.min() > 0.5 * counts.mean()


def test_photo_crops_reuse_same_settings_and_refuse_others(synthetic_photos, tmp_path):
    folder = build_photo_crops(tmp_path / 'crops', size=16, train_crops=4, test_crops=2)
    stamp = (folder / 'dataset_dict.json').stat().st_mtime_ns
    assert build_photo_crops(tmp_path / 'crops', size=16, train_crops=4, test_crops=2) == folder
    assert (folder / 'dataset_dict.json').stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match='other settings'):
        build_photo_crops(tmp_path / 'crops', size=16, train_crops=5, test_crops=2)
    with pytest.raises(ValueError, match='train_crops and test_crops >= 1'):
        build_photo_crops(tmp_path / 'other', train_crops=0)


def test_a_photograph_too_small_for_its_test_region_is_left_out(monkeypatch, tmp_path, caplog):
    photos = _photos()
    photos['tiny'] = Image.new('L', (20, 20))
    monkeypatch.setattr(builtin, 'natural_photos', lambda: photos)
    folder = build_photo_crops(tmp_path / 'crops', size=16, train_crops=2, test_crops=1)
    info = json.loads((folder / 'photo_crops.json').read_text())
    assert info['left_out'] == ['tiny'] and 'tiny' not in info['classes']
    assert 'tiny left out' in caplog.text


def test_the_real_photographs_are_natural_and_grey():
    photos = builtin.natural_photos()
    assert {'camera', 'china', 'flower', 'grace_hopper'} <= set(photos)
    assert all(p.mode == 'L' and min(p.size) >= 100 for p in photos.values())
    try:
        import sporco  # noqa: F401
    except ImportError:
        return
    assert {'barbara', 'kodim23', 'monarch', 'sail', 'tulips'} <= set(photos) and len(photos) == 26


# --- training -------------------------------------------------------------------------------------

def _trainable(tmp_path, synthetic_photos_folder):
    model = timm.create_model('u1_lgn_v1net_s', num_classes=3, width=4, widths=(8, 8))
    step0 = tmp_path / 'step0'
    timm_u1.save_pretrained(model, step0, label_names=['halves', 'noise', 'stripes'])
    return step0


def _v1_state(folder):
    from safetensors.torch import load_file

    state = load_file(str(folder / 'model.safetensors'))
    return state['lgn.weight'], state['v1.lateral.weight']


def test_a_tiny_training_run_moves_l0_and_k_and_resumes_exactly(synthetic_photos, tmp_path, capsys):
    from timm_u1.cli import main

    data = build_photo_crops(tmp_path / 'crops', size=32, train_crops=12, test_crops=4)
    torch.manual_seed(0)
    step0 = _trainable(tmp_path, data)
    common = ['train', '--model', f'local-dir:{step0}', '--pretrained', '--data', str(data), '--loss', 'ce',
              '--no-aug', '--batch-size', '8', '--lr', '0.01', '--no-progress']
    assert main(common + ['--epochs', '2', '--output', str(tmp_path / 'straight')]) == 0
    assert main(common + ['--epochs', '1', '--output', str(tmp_path / 'halted')]) == 0
    assert main(common + ['--epochs', '2', '--resume', '--output', str(tmp_path / 'halted')]) == 0
    capsys.readouterr()
    l0_start, k_start = _v1_state(step0)
    l0_end, k_end = _v1_state(tmp_path / 'straight' / 'export')
    assert not torch.equal(l0_start, l0_end) and not torch.equal(k_start, k_end)
    assert (k_end - k_start).abs().max() > 1e-4 and (l0_end - l0_start).abs().max() > 1e-4
    resumed = _v1_state(tmp_path / 'halted' / 'export')
    assert torch.equal(resumed[0], l0_end) and torch.equal(resumed[1], k_end)


# --- save, push, load -----------------------------------------------------------------------------

def _perturbed(name, **kwargs):
    """A model whose stem computes something (trained-like), so that a round trip of the identity is not all."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


ROUND_TRIPS = [
    ('u1_v1_test_resnet', dict(lateral_steps=2, lateral_kernel=3, prefilter_kernel=5)),
    ('u1_lgn_v1net_s', dict(width=4, widths=(8, 8), lateral_kernel=5)),
]


@pytest.mark.parametrize('name, kwargs', ROUND_TRIPS)
def test_save_and_load_of_a_v1_model_are_exact(name, kwargs, tmp_path):
    from timm_u1.io.factory import create_model_from_spec

    model = _perturbed(name, **kwargs)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    folder = timm_u1.save_pretrained(model, tmp_path / 'saved', label_names=['a', 'b', 'c'])
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == name[len('u1_'):]
    for key, value in kwargs.items():  # the model arguments travel in config.json
        assert config['model_args'][key] == (list(value) if isinstance(value, tuple) else value)
    loaded = [timm_u1.from_pretrained(folder), timm.create_model(f'local-dir:{folder}', pretrained=True),
              create_model_from_spec(f'local-dir:{folder}'), create_model_from_spec(str(folder))]
    for m in loaded:
        assert set(m.state_dict()) == set(model.state_dict())
        for key, value in model.state_dict().items():
            assert torch.equal(m.state_dict()[key], value), key
        with torch.no_grad():
            assert torch.equal(m.eval()(x), expected)
    assert timm_u1.is_u1_model(loaded[0]) and not timm_u1.is_u1_model(loaded[1])
    if 'v1_' in name:
        stem = find_v1_stem(loaded[1])[1]
        assert stem.lateral.steps == 2 and stem.lateral.kernel_size == 3 and stem.prefilter.kernel_size == 5


def test_push_and_load_from_the_hub_of_a_wrapped_model(hub):
    from timm_u1.publish import push_to_hub

    model = _perturbed('u1_v1_test_efficientnet', lateral_steps=1, lateral_kernel=3)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    push_to_hub(model, 'org/v1-tiny')
    for loaded in (timm_u1.from_pretrained('org/v1-tiny'), timm.create_model('hf-hub:org/v1-tiny', pretrained=True)):
        with torch.no_grad():
            assert torch.equal(loaded.eval()(x), expected)
        assert find_v1_stem(loaded)[1].lateral.kernel_size == 3


# --- timm's own train.py ---------------------------------------------------------------------------

TRAIN_PY = os.environ.get('TIMM_TRAIN_PY')


@pytest.mark.skipif(not TRAIN_PY, reason="TIMM_TRAIN_PY is not set: timm's wheel does not ship train.py; point "
                                         'TIMM_TRAIN_PY at train.py of huggingface/pytorch-image-models')
@pytest.mark.parametrize('name, kwargs, stem_keys', [
    ('lgn_v1net_s', ['width=4', 'widths=(8,8)'], ('lgn.weight', 'v1.lateral.weight')),
    ('v1_test_resnet', ['lateral_steps=1', 'lateral_kernel=3'], ('conv1.0.prefilter.weight', 'conv1.0.lateral.weight')),
])
def test_timm_train_py_trains_a_v1_model_and_plain_timm_loads_it(synthetic_photos, tmp_path, name, kwargs, stem_keys):
    import argparse
    import subprocess
    import sys
    from pathlib import Path

    from timm_u1.data.folders import write_image_folder

    data = build_photo_crops(tmp_path / 'crops', size=32, train_crops=8, test_crops=4)
    folder = tmp_path / 'images'
    for split, target in (('train', 'train'), ('test', 'validation')):
        write_image_folder(str(data), split, folder / target, progress=False)
    cmd = [sys.executable, '-m', 'timm_u1.cli.timm_train', TRAIN_PY, '--data-dir', str(folder),
           '--model', f'u1_{name}', '--model-kwargs', *kwargs, '--num-classes', '3', '--img-size', '32',
           '--batch-size', '8', '--epochs', '1', '--warmup-epochs', '0', '--lr', '0.01', '--workers', '0',
           '--device', 'cpu', '--seed', '0', '--output', str(tmp_path / 'out'), '--experiment', 'run']
    env = dict(os.environ, PYTHONPATH=str(Path(timm_u1.__file__).parents[1]), OMP_NUM_THREADS='1')
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(tmp_path / 'out' / 'run' / 'last.pth.tar', map_location='cpu', weights_only=True)
    plain = timm.create_model(name, num_classes=3, **state['args'].model_kwargs)
    plain.load_state_dict(state['state_dict'])  # strict: the stem's weights are where plain timm puts them
    for key in stem_keys:
        assert key in state['state_dict']
    if name.startswith('v1_'):  # the wrapper's K starts at exactly 0: training moved it
        assert state['state_dict'][stem_keys[1]].abs().max() > 0
