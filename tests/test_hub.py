import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

import timm_u1
from timm_u1 import from_pretrained, save_pretrained
from timm_u1.io import IntegrityError

pytestmark = pytest.mark.filterwarnings("ignore:Use .content=<...>.:DeprecationWarning")


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model(
        'u1_resnet18', num_classes=4, pretrained_cfg_overlay=dict(u1=dict(hue_weight=0.5))).eval()
    folder = tmp_path_factory.mktemp('hub') / 'u1-resnet18-test'
    save_pretrained(model, folder, label_names=['cat', 'dog', 'cow', 'owl'], metrics={'top1': 75.0})
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        logits = model(x)
    return folder, x, logits


def test_layout_and_config(saved):
    folder, _, _ = saved
    assert sorted(os.listdir(folder)) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((folder / 'config.json').read_text())
    # the base architecture, so plain timm loads it; the twin's settings under their own key
    assert config['architecture'] == 'resnet18'
    assert config['num_classes'] == 4
    assert config['label_names'] == ['cat', 'dog', 'cow', 'owl']
    assert config['u1']['hue_weight'] == 0.5 and 'u1' not in config['pretrained_cfg']
    assert config['timm_u1']['weights_sha256'] == hashlib.sha256((folder / 'model.safetensors').read_bytes()).hexdigest()
    card = (folder / 'README.md').read_text()
    assert card.startswith('---\n') and 'library_name: timm' in card and '| top1 | 75.0 |' in card


def test_local_dir_reload_is_identical(saved):
    """timm_u1 gives the twin with its settings; timm's own local-dir: gives the base model, same logits."""
    folder, x, logits = saved
    twin, base = from_pretrained(folder).eval(), timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    assert timm_u1.is_u1_model(twin) and twin.u1_cfg.hue_weight == 0.5
    assert type(base) is timm.models.ResNet
    for model in (twin, base):
        assert model.pretrained_cfg['label_names'] == ['cat', 'dog', 'cow', 'owl']
        with torch.no_grad():
            assert torch.equal(model(x), logits)


def _place_in_hub_cache(folder, cache_dir, repo_id, commit='0123456789abcdef0123456789abcdef01234567'):
    """Lay a folder out as huggingface_hub's cache holds a downloaded repo snapshot."""
    repo = cache_dir / ('models--' + repo_id.replace('/', '--'))
    snapshot = repo / 'snapshots' / commit
    shutil.copytree(folder, snapshot)
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(commit)


def _offline_outputs(models_code: str, x: torch.Tensor, cache, tmp_path) -> dict:
    """Outputs on ``x`` and pretrained tags of the models ``models_code`` builds, in a fresh
    interpreter with ``HF_HUB_OFFLINE=1`` and ``cache`` as the Hub cache."""
    code = (
        'import sys, torch, timm, timm_u1, timm_u1.io.factory\n'
        f'models = {models_code}\n'
        'x = torch.load(sys.argv[1], weights_only=True)\n'
        'with torch.no_grad():\n'
        '    outputs = [m.eval()(x) for m in models]\n'
        'torch.save({"outputs": outputs, "tags": [m.pretrained_cfg.get("tag") for m in models]}, sys.argv[2])\n'
    )
    torch.save(x, tmp_path / 'x.pt')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / 'hf-home'))
    subprocess.run([sys.executable, '-c', code, str(tmp_path / 'x.pt'), str(tmp_path / 'y.pt')], env=env, check=True)
    return torch.load(tmp_path / 'y.pt', weights_only=True)


def test_offline_hf_hub_reload_from_the_cache(saved, tmp_path):
    folder, x, logits = saved
    cache = tmp_path / 'hub-cache'
    _place_in_hub_cache(folder, cache, 'timm-u1-test/u1-resnet18')
    result = _offline_outputs(
        '[timm.create_model("hf-hub:timm-u1-test/u1-resnet18", pretrained=True), '
        'timm_u1.from_pretrained("timm-u1-test/u1-resnet18"), '
        'timm_u1.io.factory.create_model_from_spec("hf-hub:timm-u1-test/u1-resnet18")]\n'
        'assert [timm_u1.is_u1_model(m) for m in models] == [False, True, True]', x, cache, tmp_path)
    assert len(result['outputs']) == 3
    for y in result['outputs']:
        assert torch.equal(y, logits)


def test_plain_timm_checkpoint_is_refused_unless_as_u1(tmp_path):
    model = timm.create_model('resnet18', num_classes=3).eval()
    timm.models.save_for_hf(model, tmp_path, safe_serialization=True)
    with pytest.raises(ValueError, match="not a u1_ architecture.*as_u1=True"):
        from_pretrained(tmp_path)
    twin = from_pretrained(tmp_path, as_u1=True).eval()
    x = torch.randn(1, 3, 32, 32)
    assert timm_u1.is_u1_model(twin)
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))


def test_bad_folders_and_models_are_named(tmp_path):
    with pytest.raises(IntegrityError, match='config.json: missing'):
        from_pretrained(tmp_path)
    (tmp_path / 'config.json').write_text('{"architecture": "u1_resnet18", ')  # truncated
    with pytest.raises(IntegrityError, match='config.json: not valid JSON'):
        from_pretrained(tmp_path)
    with pytest.raises(ValueError, match='neither a local folder, a timm training checkpoint .* nor a Hub repo id'):
        from_pretrained(str(tmp_path / 'missing' / 'deeper' / 'path'))
    with pytest.raises(ValueError, match='saves u1 models'):
        save_pretrained(timm.create_model('resnet18', num_classes=3), tmp_path / 'plain')
    with pytest.raises(ValueError, match='2 label names for a model with 3 classes'):
        save_pretrained(timm.create_model('u1_resnet18', num_classes=3), tmp_path / 'x', label_names=['a', 'b'])


def test_failed_save_keeps_the_previous_files(saved, tmp_path, monkeypatch):
    folder, _, _ = saved
    target = tmp_path / 'copy'
    shutil.copytree(folder, target)
    before = {name: (target / name).read_bytes() for name in os.listdir(target)}

    def disk_full(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(timm.models, 'save_for_hf', disk_full)
    with pytest.raises(OSError, match='No space left'):
        save_pretrained(timm.create_model('u1_resnet18', num_classes=4), target)
    assert {name: (target / name).read_bytes() for name in os.listdir(target)} == before


def test_pretrained_tag_loads_the_base_weights_from_the_offline_hub_cache(tmp_path):
    """``u1_resnet18.a1_in1k`` reads the weights of timm's own ``timm/resnet18.a1_in1k`` repo."""
    base = timm.create_model('resnet18').eval()  # stands in for the published a1_in1k weights
    folder = tmp_path / 'published'
    folder.mkdir()
    safetensors.torch.save_file(base.state_dict(), folder / 'model.safetensors')
    cache = tmp_path / 'hub-cache'
    _place_in_hub_cache(folder, cache, 'timm/resnet18.a1_in1k')
    x = torch.randn(1, 3, 32, 32)
    result = _offline_outputs('[timm.create_model("u1_resnet18.a1_in1k", pretrained=True)]', x, cache, tmp_path)
    assert result['tags'] == ['a1_in1k']
    with torch.no_grad():
        assert torch.equal(result['outputs'][0], base(x))


# a fresh interpreter in which timm_u1 cannot be imported: what a user of plain timm has
_WITHOUT_TIMM_U1 = """
import sys
from pathlib import Path
sys.modules['timm_u1'] = None  # `import timm_u1` now raises ImportError
import torch, timm
try:
    import timm_u1
except ImportError:
    pass
else:
    raise SystemExit('timm_u1 is importable')
x = torch.load(sys.argv[1], weights_only=True)
outputs = []
for spec in sys.argv[3:]:
    model = timm.create_model(spec, pretrained=True).eval()
    assert 'timm_u1' not in sys.modules or sys.modules['timm_u1'] is None
    with torch.no_grad():
        outputs.append(model(x))
torch.save({'outputs': outputs, 'names': [type(m).__name__ for m in [model]]}, sys.argv[2])
"""


def test_plain_timm_loads_a_published_model_as_its_base_architecture(saved, tmp_path):
    folder, x, logits = saved
    cache = tmp_path / 'hub-cache'
    _place_in_hub_cache(folder, cache, 'timm-u1-test/u1-resnet18')
    torch.save(x, tmp_path / 'x.pt')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / 'hf-home'))
    env.pop('PYTHONPATH', None)  # and the import blocker: this interpreter has no timm_u1
    subprocess.run(
        [sys.executable, '-c', _WITHOUT_TIMM_U1, str(tmp_path / 'x.pt'), str(tmp_path / 'y.pt'),
         f'local-dir:{folder}', 'hf-hub:timm-u1-test/u1-resnet18'], env=env, check=True, cwd=tmp_path)
    result = torch.load(tmp_path / 'y.pt', weights_only=True)
    assert result['names'] == ['ResNet'] and len(result['outputs']) == 2
    for y in result['outputs']:
        assert torch.equal(y, logits)  # bitwise: the same weights in the same network


def test_folders_written_by_0_1_0_still_load_as_twins(saved, tmp_path):
    """0.1.0 wrote architecture "u1_<arch>" and the settings in pretrained_cfg["u1"]."""
    folder, x, logits = saved
    old = tmp_path / 'old'
    shutil.copytree(folder, old)
    config = json.loads((old / 'config.json').read_text())
    config['architecture'] = 'u1_' + config['architecture']
    config['pretrained_cfg']['u1'] = config.pop('u1')
    del config['timm_u1']
    (old / 'config.json').write_text(json.dumps(config))
    from timm_u1.io.factory import create_model_from_spec

    for model in (from_pretrained(old), create_model_from_spec(str(old))):
        assert timm_u1.is_u1_model(model) and model.u1_cfg.hue_weight == 0.5
        with torch.no_grad():
            assert torch.equal(model.eval()(x), logits)


def test_timm_save_for_hf_on_a_twin_warns_on_load_and_is_pushed_as_plain_timm_loads(hub, tmp_path, caplog):
    """timm's own save_for_hf / push_to_hf_hub on a twin write architecture "u1_<arch>", which plain timm
    cannot build: timm_u1 says so when it loads one, and `timm-u1 push` publishes the base layout."""
    from timm_u1 import cli

    torch.manual_seed(0)
    twin = timm.create_model('u1_resnet18', num_classes=3, pretrained_cfg_overlay=dict(u1=dict(hue_weight=0.25)))
    folder = tmp_path / 'by-timm'
    timm.models.save_for_hf(twin.eval(), folder, safe_serialization=True)
    assert json.loads((folder / 'config.json').read_text())['architecture'] == 'u1_resnet18'
    with caplog.at_level('WARNING', logger='timm_u1.io.load'):
        loaded = from_pretrained(folder)
    assert 'which plain timm cannot load' in caplog.text and loaded.u1_cfg.hue_weight == 0.25
    assert cli.main(['push', str(folder), '--repo-id', 'org/by-timm']) == 0
    config = json.loads(hub.files('org/by-timm')['config.json'])
    assert config['architecture'] == 'resnet18' and config['u1']['hue_weight'] == 0.25
    assert 'u1' not in config['pretrained_cfg']
    x = torch.randn(1, 3, 32, 32)
    plain = timm.create_model('hf-hub:org/by-timm', pretrained=True).eval()
    assert type(plain) is timm.models.ResNet
    with torch.no_grad():
        assert torch.equal(plain(x), twin(x))


def _timm_checkpoint(path, model, ema, arch='test_resnet', **args):
    """A checkpoint as timm's train.py (CheckpointSaver) writes it."""
    import argparse

    defaults = dict(model=arch, num_classes=model.num_classes, in_chans=None, input_size=None, img_size=None,
                    gp=None, model_kwargs={}, mean=None, std=None, crop_pct=None, interpolation='')
    namespace = argparse.Namespace(**{**defaults, **args}, model_ema=ema is not None)
    state = {'epoch': 3, 'arch': arch, 'args': namespace, 'version': 2, 'metric': 71.5,
             'optimizer': {'state': {}, 'param_groups': [{'lr': 0.1, 'params': [0]}]},
             'state_dict': {f'module.{k}': v for k, v in model.state_dict().items()}}  # as saved through DDP
    if ema is not None:
        state['state_dict_ema'] = ema.state_dict()
    torch.save(state, path)
    return path


def test_timm_training_checkpoint_is_a_model_spec(tmp_path, capsys):
    from timm_u1 import cli
    from timm_u1.io import create_model_from_spec

    torch.manual_seed(0)
    model, ema = timm.create_model('test_resnet', num_classes=4).eval(), timm.create_model('test_resnet', num_classes=4).eval()
    path = _timm_checkpoint(tmp_path / 'model_best.pth.tar', model, ema, img_size=40, mean=[0.5, 0.5, 0.5],
                            std=[0.25, 0.25, 0.25], crop_pct=0.9)
    loaded = create_model_from_spec(str(path)).eval()
    x = torch.randn(2, 3, 40, 40)
    assert timm_u1.is_u1_model(loaded)  # the twin: every command, training included, takes it
    with torch.no_grad():
        assert torch.equal(loaded(x), ema(x))  # the EMA weights, on which train.py chose its best checkpoint
    config = timm.data.resolve_model_data_config(loaded)
    assert config['input_size'] == (3, 40, 40) and config['mean'] == (0.5, 0.5, 0.5) and config['crop_pct'] == 0.9
    no_ema = _timm_checkpoint(tmp_path / 'last.pth.tar', model, None)
    with torch.no_grad():
        assert torch.equal(create_model_from_spec(str(no_ema)).eval()(x), model(x))
    from PIL import Image

    for name, colour in (('a', (200, 50, 0)), ('b', (0, 50, 200))):  # a two-class image folder
        (tmp_path / 'images' / name).mkdir(parents=True)
        Image.new('RGB', (40, 40), colour).save(tmp_path / 'images' / name / '0.png')
    assert cli.main(['memory', 'build', '--model', str(path), '--data', str(tmp_path / 'images'),
                     '--output', str(tmp_path / 'memory')]) == 0
    assert json.loads((tmp_path / 'memory' / 'memory.json').read_text())['backbone'] == str(path)


def test_a_timm_checkpoint_with_code_or_other_weights_is_refused_in_one_line(tmp_path, capsys):
    from timm_u1 import cli
    from timm_u1.io import create_model_from_spec

    class Payload:
        def __reduce__(self):
            return (print, ('unpickled code ran',))

    torch.save({'state_dict': {}, 'args': Payload()}, tmp_path / 'evil.pth.tar')
    with pytest.raises(ValueError, match='weights_only=True'):
        create_model_from_spec(str(tmp_path / 'evil.pth.tar'))
    model = timm.create_model('test_efficientnet', num_classes=3)
    path = _timm_checkpoint(tmp_path / 'checkpoint-3.pth.tar', model, None)  # args say test_resnet
    assert cli.main(['analyze', '--model', str(path), '--data', 'digits', '--output', str(tmp_path / 'a')]) == 1
    assert "does not fit architecture 'test_resnet'" in capsys.readouterr().err


@pytest.mark.timeout(900)
def test_the_timm_user_paths_script_runs_at_its_smallest_setting():
    """scripts/timm_user_paths.py (docs/hub.md's numbers): train, push, plain timm from hf-hub: and local-dir:,
    and timm's validate.py when TIMM_VALIDATE_PY names one (timm's wheel does not ship it)."""
    script = Path(__file__).resolve().parents[1] / 'scripts' / 'timm_user_paths.py'
    validate = os.environ.get('TIMM_VALIDATE_PY')
    argv = [sys.executable, str(script), '--epochs', '1', '--img-size', '16']
    done = subprocess.run(argv + (['--validate-py', validate] if validate else []), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'plain timm builds EfficientNet from hf-hub: and EfficientNet from local-dir:; logits equal: True' in done.stdout
    assert ('validate.py on the export' if validate else 'validate.py: skipped') in done.stdout


@pytest.mark.skipif(not os.environ.get('TIMM_VALIDATE_PY'),
                    reason="TIMM_VALIDATE_PY (timm's validate.py from a pytorch-image-models checkout) is not set")
def test_timms_validate_py_reproduces_the_logged_top1(tmp_path):
    """validate.py on a timm_u1 export, with nothing but the export: the top-1 the training run logged."""
    from timm_u1 import cli

    run = tmp_path / 'run'
    assert cli.main(['train', '--model', 'u1_test_efficientnet', '--data', 'digits', '--img-size', '16',
                     '--epochs', '1', '--output', str(run), '--no-progress']) == 0
    logged = json.loads((run / 'export' / 'config.json').read_text())['timm_u1']['card']['metrics']['top1']
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'scripts'))
    from timm_user_paths import digits_folder

    digits_folder(tmp_path / 'digits')
    env = dict(os.environ, PYTHONPATH='')
    subprocess.run([sys.executable, os.environ['TIMM_VALIDATE_PY'], str(tmp_path / 'digits'), '--model',
                    f'local-dir:{run / "export"}', '--pretrained', '--workers', '0', '--device', 'cpu',
                    '--results-file', str(tmp_path / 'results.json'), '--results-format', 'json'], env=env, check=True, timeout=900)
    results = json.loads((tmp_path / 'results.json').read_text())
    assert abs(results['top1'] - logged) < 1e-3, (results, logged)
