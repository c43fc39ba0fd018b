"""No silent wrong results from the Hub layer: tampered, mismatched, truncated or half-saved files are
refused by every loading path (from_pretrained, local-dir:/folder/hf-hub: specs, memories, the CLI),
with one error that names the file; Hub calls are bounded in time.
"""
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

import timm
from huggingface_hub import ModelCard, constants
from timm_u1 import cli, from_pretrained, save_pretrained
from timm_u1.io import IntegrityError, download_folder
from timm_u1.io.factory import create_model_from_spec
from timm_u1.memory import AnglePrototypeMemory
from timm_u1.publish import push_path, push_to_hub

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = 'org/tiny'


def tiny(seed: int = 0, name: str = 'u1_test_resnet', num_classes: int = 5):
    torch.manual_seed(seed)
    return timm.create_model(name, num_classes=num_classes).eval()


@pytest.fixture
def saved(tmp_path):
    model = tiny()
    return save_pretrained(model, tmp_path / 'model', label_names=list('abcde')), model


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / 'config.json').read_text())
    config.update(changes)
    (folder / 'config.json').write_text(json.dumps(config))


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def error_line(err: str) -> str:
    """The one error line of a failed command (download progress bars may share stderr), checked to be a
    user error, not a traceback or an internal error."""
    lines = [line for line in err.strip().splitlines() if line.startswith('timm-u1 ')]
    assert len(lines) == 1 and 'Traceback' not in err and 'internal error' not in lines[0], err
    return lines[0]


def local_loaders(folder: Path):
    """Every way a local model folder is loaded: the library, timm-style specs, the CLI's --model."""
    return {
        'from_pretrained': lambda: from_pretrained(folder),
        'local-dir:': lambda: create_model_from_spec(f'local-dir:{folder}'),
        '--model DIR': lambda: create_model_from_spec(str(folder)),
    }


# --- a config that disagrees with the weights ---------------------------------------------------

def test_num_classes_that_disagrees_with_the_weights_is_refused_naming_both(saved):
    folder, _ = saved
    edit_config(folder, num_classes=10, label_names=[str(i) for i in range(10)])
    for name, load in local_loaders(folder).items():
        with pytest.raises(ValueError, match=r'num_classes=10 but .* has 5 outputs'):
            load()
    # a new head is asked for explicitly, and keeps the backbone
    edit_config(folder, num_classes=5, label_names=list('abcde'))
    model = from_pretrained(folder, num_classes=3)
    assert model.num_classes == 3 and torch.equal(model.conv1[0].weight, saved[1].conv1[0].weight)


@pytest.mark.parametrize('changes, words', [
    (dict(label_names=['a', 'b']), '2 label names for num_classes=5'),
    (dict(u1='hue_weight=0.5'), '"u1" must be a mapping'),
    (dict(u1={'hue_weight': 'high'}), '"u1.hue_weight" must be a finite number'),
    (dict(u1={'hue_weight': -1.0}), 'bad U\\(1\\) settings'),
    (dict(num_classes='5'), '"num_classes" must be an integer'),
    (dict(architecture='test_efficientnet'), "does not fit architecture 'test_efficientnet'"),
])
def test_inconsistent_configs_are_named(saved, changes, words):
    folder, _ = saved
    edit_config(folder, **changes)
    for load in local_loaders(folder).values():
        with pytest.raises(ValueError, match=words):
            load()


def test_bit_flip_in_local_weights_is_caught_by_the_recorded_sha256(saved):
    folder, _ = saved
    flip_last_byte(folder / 'model.safetensors')  # the header still parses, the length is right
    for load in local_loaders(folder).values():
        with pytest.raises(IntegrityError, match='model.safetensors: SHA-256'):
            load()


# --- atomic, tidy saves --------------------------------------------------------------------------

def test_interrupted_save_leaves_the_previous_folder_whole_and_no_temp(saved, monkeypatch):
    folder, model = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_replace, calls = os.replace, []

    def dies_on_second_file(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # between the weights and the config
        return real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', dies_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(tiny(seed=1), folder, label_names=list('abcde'))
    monkeypatch.setattr(os, 'replace', real_replace)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # old files, no hidden temp
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(from_pretrained(folder).eval()(x), model(x))


def test_temp_folder_of_a_killed_save_is_removed_by_the_next_save(saved):
    folder, model = saved
    stale = folder / '.save-999999999-abc'  # no such process
    stale.mkdir()
    (stale / 'model.safetensors').write_bytes(b'half')
    save_pretrained(model, folder)
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors']


def test_saved_files_follow_the_umask(saved):
    folder, _ = saved
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


# --- Hub paths: one integrity error for models and memories --------------------------------------

def make_memory(folder: Path, classes='abcde', seed: int = 0) -> Path:
    gen = torch.Generator().manual_seed(seed)
    memory = AnglePrototypeMemory(list(classes), backbone=f'hf-hub:{REPO}', fingerprint='0123abcd')
    memory.add_features(torch.rand(10, 8, 4, 4, generator=gen), torch.arange(10) % len(classes))
    return memory.save_pretrained(folder)


def test_tampered_hub_model_is_refused_by_every_loading_path(hub, capsys):
    push_to_hub(tiny(), REPO)
    folder = download_folder(REPO)
    flip_last_byte((folder / 'model.safetensors').resolve())  # the cached blob
    for load in (lambda: from_pretrained(REPO), lambda: create_model_from_spec(f'hf-hub:{REPO}')):
        with pytest.raises(IntegrityError, match='model.safetensors: content differs'):
            load()
    assert cli.main(['memory', 'build', '--model', f'hf-hub:{REPO}', '--data', 'digits', '--output',
                     str(Path(constants.HF_HUB_CACHE).parent / 'mem')]) == 1
    assert 'model.safetensors: content differs' in error_line(capsys.readouterr().err)


def test_tampered_hub_memory_is_refused(hub, tmp_path, capsys):
    make_memory(tmp_path / 'memory')
    push_path(tmp_path / 'memory', REPO)
    loaded = AnglePrototypeMemory.from_pretrained(REPO)
    assert loaded.class_names == list('abcde')
    config = (download_folder(REPO, path_in_repo='memory') / 'memory.json').resolve()
    meta = json.loads(config.read_text())
    config.write_text(json.dumps({**meta, 'class_names': list('vwxyz')}))  # same length, other names
    with pytest.raises(IntegrityError, match='memory.json'):
        AnglePrototypeMemory.from_pretrained(REPO)
    code = cli.main(['memory', 'eval', '--memory', REPO, '--data', 'digits'])
    assert code == 1 and 'memory.json' in error_line(capsys.readouterr().err)


def test_memory_folder_swapped_for_a_link_to_another_memory_is_refused(hub, tmp_path):
    make_memory(tmp_path / 'memory')
    push_path(tmp_path / 'memory', REPO)
    snapshot = download_folder(REPO)
    other = make_memory(tmp_path / 'other', classes='pqrst', seed=1)
    shutil.rmtree(snapshot / 'memory')
    (snapshot / 'memory').symlink_to(other, target_is_directory=True)
    with pytest.raises(IntegrityError, match='memory'):
        AnglePrototypeMemory.from_pretrained(REPO)


@pytest.mark.parametrize('changes, words', [
    (dict(complete='false'), '"complete" must be bool'),
    (dict(class_names='abcde'), '"class_names" must be list'),
    (dict(grid_size=[4]), '"grid_size" must be two positive integers'),
    (dict(mode='nearest'), '"mode" must be one of'),
])
def test_tampered_local_memory_json_is_a_one_line_error(tmp_path, capsys, changes, words):
    folder = make_memory(tmp_path / 'memory')
    meta = json.loads((folder / 'memory.json').read_text())
    (folder / 'memory.json').write_text(json.dumps({**meta, **changes}))
    with pytest.raises(ValueError, match=words):
        AnglePrototypeMemory.from_pretrained(folder)
    assert cli.main(['memory', 'eval', '--memory', str(folder), '--data', 'digits']) == 1
    assert words.split('"')[1] in error_line(capsys.readouterr().err)


# --- push checks models as it checks memories ----------------------------------------------------

def test_push_refuses_a_truncated_model(hub, saved, capsys):
    folder, _ = saved
    data = (folder / 'model.safetensors').read_bytes()
    (folder / 'model.safetensors').write_bytes(data[:-100])
    assert cli.main(['push', str(folder), '--repo-id', REPO]) == 1
    assert 'model.safetensors' in error_line(capsys.readouterr().err)
    assert hub.calls('commit') == 0


def test_push_runs_the_fit_check_a_load_runs(hub, saved, capsys):
    folder, _ = saved
    edit_config(folder, architecture='test_efficientnet')  # the weights' hash still matches: only the fit is wrong
    with pytest.raises(ValueError, match="does not fit architecture 'test_efficientnet'"):
        from_pretrained(folder)
    assert cli.main(['push', str(folder), '--repo-id', REPO]) == 1
    assert "does not fit architecture 'test_efficientnet'" in error_line(capsys.readouterr().err)
    assert hub.calls('commit') == 0


def test_push_never_follows_links_out_of_the_folder(hub, saved, tmp_path, capsys):
    folder, _ = saved
    secret = tmp_path / 'secret.txt'
    secret.write_text('not for the Hub')
    (folder / 'notes.txt').symlink_to(secret)
    assert cli.main(['push', str(folder), '--repo-id', REPO]) == 1
    line = error_line(capsys.readouterr().err)
    assert f'notes.txt -> {secret}' in line and 'cp -L' in line
    assert hub.calls('commit') == 0 and not any(b'not for the Hub' in c for c in hub.lfs_store.values())
    (folder / 'notes.txt').unlink()
    (folder / 'inside.md').symlink_to(folder / 'README.md')  # a link within the folder is its own content
    assert cli.main(['push', str(folder), '--repo-id', REPO]) == 0
    assert hub.files(REPO)['inside.md'] == (folder / 'README.md').read_bytes()


def test_a_hub_folder_whose_weights_differ_from_the_recorded_sha256_is_refused(hub, tmp_path):
    """config.json and weights of two saves, pushed as they are: every file matches the Hub's listing, so
    only the recorded hash can tell; a local folder with the same files was already refused."""
    from timm_u1.io import push_folder_to_hub

    first = save_pretrained(tiny(seed=0), tmp_path / 'first')
    second = save_pretrained(tiny(seed=1), tmp_path / 'second')
    shutil.copyfile(second / 'model.safetensors', first / 'model.safetensors')
    with pytest.raises(IntegrityError, match='model.safetensors: SHA-256'):
        from_pretrained(first)
    push_folder_to_hub(first, REPO)
    for load in (lambda: from_pretrained(REPO), lambda: create_model_from_spec(f'hf-hub:{REPO}')):
        with pytest.raises(IntegrityError, match='model.safetensors: SHA-256 .* differs from the .* recorded'):
            load()


def _leaves(value, path=()):
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, path + (key,))
    else:
        yield path, value


def _wrong(value):
    """A value of a type no field of config.json takes where ``value`` stands."""
    return {'x': [[]]} if value is None or isinstance(value, list) else [[[]]] if isinstance(value, dict) else [[]]


def _with(config, path, value):
    config = json.loads(json.dumps(config))
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return config


def test_every_config_field_of_the_wrong_type_is_an_error_naming_it(saved):
    """Every field of a saved config.json, replaced by a value of a type it never takes, is refused by a
    load with a user error (ValueError / OSError, one line in the CLI) that names the field."""
    folder, _ = saved
    original = json.loads((folder / 'config.json').read_text())
    leaves = [path for path, _ in _leaves(original)]
    assert len(leaves) > 30 and ('pretrained_cfg', 'mean') in leaves and ('timm_u1', 'card', 'plots') in leaves
    unnamed = []
    for path, value in _leaves(original):
        (folder / 'config.json').write_text(json.dumps(_with(original, path, _wrong(value))))
        try:
            create_model_from_spec(str(folder))
        except (ValueError, OSError) as e:
            # timm checks its constructor's arguments: the error names model_args and says what timm said
            named = 'model_args' if path[0] == 'model_args' else '.'.join(path)
            if named not in str(e):
                unnamed.append(f'{".".join(path)}: {e}')
        else:
            unnamed.append(f'{".".join(path)}: loaded')
    assert not unnamed, unnamed


def test_a_wrong_config_field_is_one_line_in_the_cli(saved, tmp_path, capsys):
    folder, _ = saved
    edit_config(folder, pretrained_cfg={**json.loads((folder / 'config.json').read_text())['pretrained_cfg'],
                                        'mean': 'grey'})
    assert cli.main(['analyze', '--model', str(folder), '--data', 'digits', '--output', str(tmp_path / 'a')]) == 1
    assert '"pretrained_cfg.mean" must be a list' in error_line(capsys.readouterr().err)


def test_push_refuses_a_memory_whose_complete_flag_is_a_string(hub, tmp_path, capsys):
    folder = make_memory(tmp_path / 'memory')
    meta = json.loads((folder / 'memory.json').read_text())
    (folder / 'memory.json').write_text(json.dumps({**meta, 'complete': 'false'}))  # truthy, yet not finished
    assert cli.main(['push', str(folder), '--repo-id', REPO]) == 1
    assert '"complete" must be bool' in error_line(capsys.readouterr().err)
    assert hub.calls('commit') == 0


# --- Hub failures: bounded and one line ----------------------------------------------------------

@pytest.mark.parametrize('argv', [
    ['memory', 'eval', '--memory', 'nosuch/repo', '--data', 'digits'],
    ['memory', 'build', '--model', 'hf-hub:org/nope', '--data', 'digits', '--output', '{tmp}/m'],
    ['analyze', '--model', 'hf-hub:org/nope', '--data', 'digits', '--output', '{tmp}/a'],
])
def test_missing_repos_and_dropped_connections_are_one_line_errors(hub, tmp_path, capsys, monkeypatch, argv):
    monkeypatch.setenv('TIMM_U1_HUB_TIMEOUT', '0.5')  # a dropped connection is retried for this long, not 23 s
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert cli.main(argv) == 1
    line = error_line(capsys.readouterr().err)
    assert ('nosuch/repo' in line or 'org/nope' in line) and hub.endpoint in line
    push_to_hub(tiny(), REPO)
    hub.fail[('GET', 'tree')] = 'drop'  # the connection dies mid-download
    hub.fail[('GET', 'info')] = 'drop'
    assert cli.main(['memory', 'build', '--model', f'hf-hub:{REPO}', '--data', 'digits', '--output',
                     str(tmp_path / 'm2')]) == 1
    assert hub.endpoint in error_line(capsys.readouterr().err)


def test_offline_without_the_cache_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'empty-cache'))
    assert cli.main(['memory', 'build', '--model', f'hf-hub:{REPO}', '--data', 'digits',
                     '--output', str(tmp_path / 'm')]) == 1
    assert 'not in the local Hugging Face cache' in error_line(capsys.readouterr().err)


# --- cards from data -------------------------------------------------------------------------------

def test_card_metadata_base_model_accuracy_and_split(hub, tmp_path):
    from huggingface_hub import metadata_load

    push_to_hub(tiny(), 'org/base')
    model = create_model_from_spec('hf-hub:org/base')  # a fine-tune starts from these weights
    folder = save_pretrained(
        model, tmp_path / 'fine', metrics={'top1': 91.5, 'top5': 99.0, 'ce': 0.3}, dataset='org/imgs',
        eval_split='test', repo_id='org/fine')
    meta = metadata_load(folder / 'README.md')
    card = ModelCard.load(folder / 'README.md')
    assert meta['base_model'] == 'org/base' == card.data.base_model
    assert meta['datasets'] == ['org/imgs']  # a Hub dataset: named, and the model-index's dataset
    results = {r.metric_name: r for r in card.data.eval_results}
    assert set(results) == {'top-1 accuracy', 'top-5 accuracy'}
    assert {r.metric_type for r in results.values()} == {'accuracy'}
    assert results['top-5 accuracy'].metric_value == 99.0
    assert {(r.dataset_type, r.dataset_split) for r in results.values()} == {('org/imgs', 'test')}
    assert '| ce | 0.3 |' in card.text
    # pushing under another name re-renders the card from config.json, base model kept
    push_path(folder, 'org/renamed')
    pushed = ModelCard(hub.files('org/renamed')['README.md'].decode())
    assert pushed.data.base_model == 'org/base' and pushed.data.model_name == 'renamed'
    assert {r.metric_value for r in pushed.data.eval_results} == {91.5, 99.0}
