"""Publishing to and loading from the Hub, against a local Hub API (tests/hub_server.py).

The real ``huggingface_hub`` client talks to an in-memory Hub on 127.0.0.1: the tests check the
files and commits that arrive, the round trip back into timm, the Hub cache offline, and faults.
"""
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import timm
import timm_u1
from huggingface_hub import ModelCard, constants
from timm_u1 import cli, from_pretrained
from timm_u1.io import (
    IntegrityError, MissingTokenError, PushError, UnsafeCheckpointError, download_folder, push_folder_to_hub,
    verify_folder,
)
from timm_u1.publish import detect_folder, download_memory, push_path, push_to_hub

# huggingface_hub's own LFS upload passes a file object as data=, which httpx2 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = 'org/tiny'


def tiny_model(seed: int = 0, name: str = 'u1_test_efficientnet'):
    torch.manual_seed(seed)
    return timm.create_model(name, num_classes=5, pretrained_cfg_overlay=dict(u1=dict(hue_weight=0.5))).eval()


def png(path: Path) -> Path:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([3.0, 2.0, 1.2, 0.9])
    ax.set_title('loss')
    fig.savefig(path)
    plt.close(fig)
    return path


def digest(folder: Path):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


# --- push --------------------------------------------------------------------------------------

def test_push_to_hub_commits_the_timm_layout_in_one_commit(hub, tmp_path):
    model = tiny_model()
    info = push_to_hub(
        model, REPO, label_names=list('abcde'), metrics={'top1': 80.0}, dataset='digits',
        plots=[png(tmp_path / 'loss.png')], private=True, commit_message='first model')
    files = hub.files(REPO)
    assert sorted(files) == ['.gitattributes', 'README.md', 'config.json', 'loss.png', 'model.safetensors']
    history = hub.history(REPO)
    assert [c.summary for c in history] == ['first model', 'initial commit']
    assert info.oid == history[0].oid
    assert hub.repos[f'models/{REPO}'].private
    config = json.loads(files['config.json'])
    assert config['architecture'] == 'test_efficientnet' and config['label_names'] == list('abcde')
    assert config['u1']['hue_weight'] == 0.5
    assert '![loss.png](loss.png)' in files['README.md'].decode()


def test_round_trip_gives_identical_outputs_online_and_offline_from_cache(hub, x, monkeypatch):
    model = tiny_model()
    push_to_hub(model, REPO)
    expected = outputs(model, x)
    assert type(from_pretrained(REPO)) is type(model)  # timm_u1 gives the twin
    assert type(timm.create_model(f'hf-hub:{REPO}', pretrained=True)) is timm.models.EfficientNet  # timm the base
    for loaded in (from_pretrained(REPO), timm.create_model(f'hf-hub:{REPO}', pretrained=True)):
        assert torch.equal(outputs(loaded, x), expected)
    hub.stop()  # the Hub is gone: only the cache can answer now
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    assert torch.equal(outputs(from_pretrained(REPO), x), expected)
    assert torch.equal(outputs(timm.create_model(f'hf-hub:{REPO}', pretrained=True), x), expected)


def test_revision_pinning_online_and_offline(hub, x, monkeypatch):
    first, second = tiny_model(0), tiny_model(1)
    v1 = push_to_hub(first, REPO).oid
    v2 = push_to_hub(second, REPO).oid
    assert v1 != v2 and hub.history(REPO)[0].oid == v2
    assert torch.equal(outputs(from_pretrained(REPO, revision=v1), x), outputs(first, x))
    assert torch.equal(outputs(from_pretrained(REPO), x), outputs(second, x))
    hub.stop()
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    assert torch.equal(outputs(from_pretrained(REPO, revision=v1), x), outputs(first, x))
    assert torch.equal(outputs(timm.create_model(f'hf-hub:{REPO}@{v1}', pretrained=True), x), outputs(first, x))


def test_branch_and_pull_request_leave_main_alone(hub):
    push_to_hub(tiny_model(0), REPO)
    main = hub.history(REPO)[0].oid
    info = push_to_hub(tiny_model(1), REPO, create_pr=True)
    assert info.pr_url and info.pr_url.endswith('/discussions/1')
    assert hub.history(REPO)[0].oid == main
    assert hub.files(REPO, 'refs/pr/1')['model.safetensors'] != hub.files(REPO)['model.safetensors']
    push_to_hub(tiny_model(2), REPO, revision='dev')
    assert hub.history(REPO)[0].oid == main
    assert [c.summary for c in hub.history(REPO, 'dev')][1:] == [c.summary for c in hub.history(REPO)]


def test_failed_commit_keeps_local_files_names_what_was_not_uploaded_and_resumes(hub, tmp_path):
    folder = timm_u1.save_pretrained(tiny_model(), tmp_path / 'export', repo_id=REPO)
    push_folder_to_hub(folder, REPO)
    (folder / 'README.md').write_text((folder / 'README.md').read_text() + '\nmore\n')
    timm_u1.save_pretrained(tiny_model(1), folder, repo_id=REPO, model_card=False)
    before = digest(folder)
    for fault in (500, 'drop'):
        hub.fail[('POST', 'commit')] = fault
        with pytest.raises(PushError) as err:
            push_folder_to_hub(folder, REPO)
        message = str(err.value)
        # config.json records the weights' SHA-256, so new weights come with a new config
        assert 'Not uploaded (3 of 3 files): README.md, config.json, model.safetensors.' in message
        assert 'run the same push again to resume' in message
        assert err.value.not_uploaded == ['README.md', 'config.json', 'model.safetensors']
        assert digest(folder) == before
        assert len(hub.history(REPO)) == 2  # nothing new arrived
    assert hub.calls('lfs-upload') == 2  # the first push, then the new weights once
    del hub.fail[('POST', 'commit')]
    push_folder_to_hub(folder, REPO, commit_message='resumed')
    assert hub.calls('lfs-upload') == 2  # the resumed push did not send the weights again
    assert hub.history(REPO)[0].summary == 'resumed'
    assert hub.files(REPO)['model.safetensors'] == (folder / 'model.safetensors').read_bytes()


def test_lost_commit_answer_is_checked_against_the_hub(hub, tmp_path):
    folder = timm_u1.save_pretrained(tiny_model(), tmp_path / 'export', repo_id=REPO)
    hub.fail[('POST', 'commit')] = 'drop-after'  # the commit lands, its answer does not
    with pytest.raises(PushError) as err:
        push_folder_to_hub(folder, REPO)
    assert 'Not uploaded (0 of 3 files): none.' in str(err.value)
    assert err.value.uploaded == ['README.md', 'config.json', 'model.safetensors']
    push_folder_to_hub(folder, REPO)  # the re-run finds everything there: no new commit
    assert len(hub.history(REPO)) == 2

    other = timm_u1.save_pretrained(tiny_model(1), tmp_path / 'other', repo_id=REPO)
    hub.fail[('GET', 'tree')] = 403  # when the Hub cannot be asked, the message says so (a 5xx is retried for ~15 s)
    hub.fail[('POST', 'commit')] = 500
    with pytest.raises(PushError, match='could not be asked') as err:
        push_folder_to_hub(other, REPO)
    assert err.value.not_uploaded == ['README.md', 'config.json', 'model.safetensors']


def test_missing_token_fails_before_any_work(hub, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv('HF_TOKEN')
    monkeypatch.setattr(constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-token'))
    with pytest.raises(MissingTokenError, match='HF_TOKEN'):
        push_to_hub(tiny_model(), REPO)
    folder = timm_u1.save_pretrained(tiny_model(), tmp_path / 'export')
    assert cli.main(['push', str(folder), '--repo-id', REPO]) == 1
    assert 'No Hugging Face token' in capsys.readouterr().err
    assert hub.requests == []


def test_wrong_token_is_a_push_error(hub):
    with pytest.raises(PushError, match='(?s)Not uploaded.*The Hub refused the token'):
        push_to_hub(tiny_model(), REPO, token='hf_wrong')
    assert REPO not in {r.repo_id for r in hub.repos.values()}


def test_existing_repo_of_another_architecture_is_refused(hub):
    push_to_hub(tiny_model(), REPO)
    commits = len(hub.history(REPO))
    refused = "already holds a 'test_efficientnet' model; refusing to push a 'u1_test_resnet'"
    with pytest.raises(ValueError, match=refused):
        push_to_hub(tiny_model(name='u1_test_resnet'), REPO)
    assert len(hub.history(REPO)) == commits and hub.calls('commit') == 1
    with pytest.raises(ValueError, match='already holds'):  # a new branch starts from main
        push_to_hub(tiny_model(name='u1_test_resnet'), REPO, revision='resnet')
    assert 'resnet' not in hub.repos[f'models/{REPO}'].refs
    push_to_hub(tiny_model(1), REPO)  # same architecture, new weights: fine
    assert len(hub.history(REPO)) == commits + 1


# --- download checks ---------------------------------------------------------------------------

def test_corrupt_or_missing_downloaded_file_is_named(hub, tmp_path, monkeypatch):
    push_to_hub(tiny_model(), REPO)
    folder = download_folder(REPO)
    blob = (folder / 'model.safetensors').resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the weights: the header still parses
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r'model.safetensors: content differs') as err:
        download_folder(REPO)  # the cache already "has" it: the check, not the download, catches it
    assert list(err.value.problems) == ['model.safetensors']
    with pytest.raises(IntegrityError, match='model.safetensors'):
        from_pretrained(REPO)

    (folder / 'config.json').unlink()
    with pytest.raises(IntegrityError, match='config.json: missing'):
        verify_folder(folder, required=('config.json',))

    copy = tmp_path / 'copy'
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns('config.json'))
    (copy / 'model.safetensors').write_bytes(blob.read_bytes()[:-10])
    with pytest.raises(IntegrityError) as err:
        verify_folder(copy, required=('config.json',))
    assert err.value.problems['config.json'] == 'missing'
    assert err.value.problems['model.safetensors'].startswith('not a whole safetensors file')


def test_pickle_only_checkpoint_needs_opt_in_and_loads_weights_only(tmp_path, x):
    model = tiny_model()
    folder = timm_u1.save_pretrained(model, tmp_path / 'pickled', model_card=False)
    (folder / 'model.safetensors').unlink()
    torch.save(model.state_dict(), folder / 'pytorch_model.bin')
    with pytest.raises(UnsafeCheckpointError, match='allow_pickle=True'):
        from_pretrained(folder)
    assert torch.equal(outputs(from_pretrained(folder, allow_pickle=True), x), outputs(model, x))

    class Payload:
        def __reduce__(self):
            return (print, ('unpickled code ran',))

    torch.save({'weights': Payload()}, folder / 'pytorch_model.bin')
    with pytest.raises(Exception, match='Weights only load failed'):
        from_pretrained(folder, allow_pickle=True)


# --- timm-u1 push of runs and memories -----------------------------------------------------------

def make_run(tmp_path: Path) -> Path:
    """A run folder as scripts/train.py leaves it: its export's card does not know the repo id yet."""
    run = tmp_path / 'run'
    timm_u1.save_pretrained(
        tiny_model(), run / 'export', metrics={'top1': 80.0}, dataset='digits', training='2 epochs.')
    (run / 'metrics.jsonl').write_text(json.dumps({'epoch': 0, 'top1': 80.0}) + '\n')
    png(run / 'loss.png')
    (run / 'checkpoint.pt').write_bytes(b'not for the Hub')
    return run


def make_memory(tmp_path: Path = None):
    """A real angle-prototype memory over random 8x4x4 feature maps (saved to tmp_path/memory if given)."""
    from timm_u1.memory import AnglePrototypeMemory

    gen = torch.Generator().manual_seed(0)
    memory = AnglePrototypeMemory(list('abcde'), backbone=f'hf-hub:{REPO}', fingerprint='0123abcd')
    memory.add_features(torch.rand(10, 8, 4, 4, generator=gen), torch.arange(10) % 5)
    memory.dataset, memory.metrics = 'digits', {'test_accuracy_prototype': 0.75}
    return memory if tmp_path is None else memory.save_pretrained(tmp_path / 'memory')


def test_detect_folder(tmp_path):
    run, memory = make_run(tmp_path), make_memory(tmp_path)
    assert detect_folder(run) == ('run', run / 'export')
    assert detect_folder(run / 'export') == ('model', run / 'export')
    assert detect_folder(memory) == ('memory', memory)
    with pytest.raises(ValueError, match='neither a training run'):
        detect_folder(tmp_path)


def test_cli_pushes_a_run_then_its_memory_into_one_repo(hub, tmp_path, capsys):
    run, memory = make_run(tmp_path), make_memory(tmp_path)
    before = digest(run), digest(memory)
    assert cli.main(['push', str(run), '--repo-id', REPO]) == 0
    assert cli.main(['push', str(memory), '--repo-id', REPO]) == 0
    assert capsys.readouterr().out.count('Pushed ') == 2
    files = hub.files(REPO)
    assert sorted(files) == [
        '.gitattributes', 'README.md', 'config.json', 'loss.png', 'memory/README.md', 'memory/memory.json',
        'memory/memory.safetensors', 'metrics.jsonl', 'model.safetensors']
    assert files['model.safetensors'] == (run / 'export' / 'model.safetensors').read_bytes()
    model_card = ModelCard(files['README.md'].decode())
    assert f'hf-hub:{REPO}' in model_card.text and 'ORG/export' in (run / 'export' / 'README.md').read_text()
    assert '| top1 | 80.0 |' in model_card.text and '2 epochs.' in model_card.text
    assert (digest(run), digest(memory)) == before
    card = ModelCard(files['memory/README.md'].decode())
    assert card.data.base_model == REPO and card.data.library_name == 'timm_u1'
    assert card.data.datasets is None  # digits is built locally: described, not given as a Hub dataset id
    assert card.data.eval_results is None  # and so no model-index, whose dataset must be a Hub id
    assert '| test_accuracy_prototype | 75.0 |' in card.text  # memory.json's fraction 0.75, in percent
    assert '| num_bins | 8 |' in card.text and 'subfolder="memory"' in card.text

    folder = download_memory(REPO)
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'memory.json', 'memory.safetensors']
    (folder / 'memory.json').unlink()
    with pytest.raises(IntegrityError, match='memory.json: missing'):
        verify_folder(folder, required=('memory.safetensors', 'memory.json'))


def test_unfinished_or_corrupt_memory_is_not_pushed(hub, tmp_path, capsys):
    folder = make_memory(tmp_path)
    meta = json.loads((folder / 'memory.json').read_text())
    (folder / 'memory.json').write_text(json.dumps({**meta, 'complete': False}))
    assert cli.main(['push', str(folder), '--repo-id', REPO]) == 1
    assert 'build did not finish' in capsys.readouterr().err
    (folder / 'memory.json').write_text(json.dumps(meta))
    data = bytearray((folder / 'memory.safetensors').read_bytes())
    data[-1] ^= 0xFF
    (folder / 'memory.safetensors').write_bytes(bytes(data))
    assert cli.main(['push', str(folder), '--repo-id', REPO]) == 1
    assert 'does not match the SHA-256' in capsys.readouterr().err
    assert hub.calls('commit') == 0


# --- model cards ---------------------------------------------------------------------------------

def test_digits_model_card_renders_metrics_and_plots_and_its_header_parses(tmp_path):
    folder = tmp_path / 'digits'
    folder.mkdir()
    png(folder / 'loss.png')
    model = timm.create_model('u1_test_efficientnet', num_classes=10)
    metrics = {'top1': 93.25, 'top5': 99.5, 'hue_error_deg': 12.5}
    timm_u1.save_pretrained(
        model, folder, label_names=[str(i) for i in range(10)], repo_id='org/digits-u1', metrics=metrics,
        dataset='digits', training='10 epochs of AdamW, lambda = 0.5.', plots=['loss.png'])
    card = ModelCard.load(folder / 'README.md')
    assert card.data.library_name == 'timm' and card.data.datasets is None
    assert 'timm_u1' in card.data.tags
    assert card.data.model_name == 'digits-u1'
    text = card.text
    assert '| top1 | 93.25 |' in text and '| hue_weight | 1.0 |' in text
    assert '![loss.png](loss.png)' in text and (folder / 'loss.png').is_file()
    assert '10 epochs of AdamW' in text and 'hf-hub:org/digits-u1' in text


def test_memory_push_to_hub_round_trip(hub, monkeypatch):
    from timm_u1.memory import AnglePrototypeMemory

    memory = make_memory()
    memory.push_to_hub(REPO)  # AnglePrototypeMemory.push_to_hub goes through push_folder_to_hub
    assert sorted(hub.files(REPO)) == ['.gitattributes', 'memory/memory.json', 'memory/memory.safetensors']
    queries = torch.rand(3, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    online = download_memory(REPO)
    hub.stop()
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    assert download_memory(REPO) == online  # from the cache, checked again
    loaded = AnglePrototypeMemory.from_pretrained(REPO, subfolder='memory')  # the memory's own Hub path
    assert torch.equal(loaded.scores_from_features(queries), memory.scores_from_features(queries))


def test_local_data_gets_no_model_index_and_stays_out_of_the_metadata(tmp_path):
    """A model-index names a Hub dataset by its id; local data has none (it was typed "local:NAME")."""
    from timm_u1.io.cards import render_model_card

    model = timm.create_model('u1_test_efficientnet', num_classes=3)
    cfg = dict(model.pretrained_cfg, num_classes=3)
    for dataset in ('/data/my_images', 'digits'):
        card = ModelCard(render_model_card(cfg, model.num_features, metrics={'top1': 50.0}, dataset=dataset))
        assert card.data.datasets is None and card.data.eval_results is None
        assert '| top1 | 50.0 |' in card.text and '/data' not in card.text
    assert '**Dataset:** a local image folder (`my_images`)' in ModelCard(render_model_card(
        cfg, model.num_features, dataset='/data/my_images')).text


def test_card_licence_is_given_or_inherited_never_invented(tmp_path):
    model = tiny_model()
    assert model.pretrained_cfg.pop('license') == 'apache-2.0'  # timm's licence of test_efficientnet's weights
    card = ModelCard.load(timm_u1.save_pretrained(model, tmp_path / 'none') / 'README.md')
    assert card.data.license is None  # weights whose licence is unknown: the card claims none
    card = ModelCard.load(timm_u1.save_pretrained(model, tmp_path / 'mit', license='mit') / 'README.md')
    assert card.data.license == 'mit'
    model.pretrained_cfg['license'] = 'cc-by-nc-4.0'  # what timm records for the base weights
    assert ModelCard.load(timm_u1.save_pretrained(model, tmp_path / 'base') / 'README.md').data.license == 'cc-by-nc-4.0'
    with pytest.raises(ValueError, match="licence 'apache' is not one the Hub knows.*apache-2.0"):
        timm_u1.save_pretrained(model, tmp_path / 'bad', license='apache')


def test_card_gives_size_cost_feature_extraction_and_citation(tmp_path):
    model = tiny_model()
    folder = timm_u1.save_pretrained(model, tmp_path / 'export', repo_id='org/fx')
    record = json.loads((folder / 'config.json').read_text())['timm_u1']
    assert record['params'] == sum(p.numel() for p in model.parameters())
    assert record['gmacs'] > 0
    text = ModelCard.load(folder / 'README.md').text
    assert f'params (M) {record["params"] / 1e6:.2f}' in text and f'GMACs {record["gmacs"]:.3g}' in text
    assert 'features_only=True' in text and 'num_classes=0' in text  # feature maps and embeddings
    assert 'eprint = {2206.02220}' in text and 'eprint = {2310.03911}' in text
    # the snippets run as written against the folder
    features = timm.create_model(f'local-dir:{folder}', pretrained=True, features_only=True).eval()
    embedder = timm.create_model(f'local-dir:{folder}', pretrained=True, num_classes=0).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert len(features(x)) > 1 and embedder(x).shape == (1, model.num_features)


def test_transformers_style_loading_passes_num_classes_once(tmp_path):
    """transformers' TimmWrapper builds timm.create_model(arch, num_classes=N, **model_args)."""
    folder = timm_u1.save_pretrained(tiny_model(), tmp_path / 'export')
    config = json.loads((folder / 'config.json').read_text())
    assert 'num_classes' not in config.get('model_args', {})
    model = timm.create_model(config['architecture'], pretrained=False, num_classes=config['num_classes'],
                              **config.get('model_args', {}))
    assert model.num_classes == 5


def test_transformers_timm_wrapper_loads_the_export(tmp_path):
    """transformers' own loader, where it is installed (it is not in timm_u1's dependencies)."""
    transformers = pytest.importorskip('transformers', reason='transformers is not installed')
    torch.manual_seed(0)
    model = timm.create_model('u1_test_resnet', num_classes=4).eval()
    folder = timm_u1.save_pretrained(model, tmp_path / 'export', label_names=list('abcd'))
    wrapped = transformers.AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(wrapped(x).logits, model(x), atol=1e-6)
    assert wrapped.config.id2label == dict(enumerate('abcd'))


def test_memory_card_splits_percent_and_root_card(hub, tmp_path):
    """A memory's accuracies are fractions measured on the split their name says; its card is the repo's
    root card when no model is there (the Hub reads metadata from the root card only)."""
    folder = make_memory(tmp_path)
    meta = json.loads((folder / 'memory.json').read_text())
    meta.update(dataset='org/imgs:train', metrics={'test_accuracy_prototype': 0.75})  # built on train, tested on test
    (folder / 'memory.json').write_text(json.dumps(meta))
    push_path(folder, 'org/mem')
    files = hub.files('org/mem')
    assert {'README.md', 'memory/README.md', 'memory/memory.json'} <= set(files)
    card = ModelCard(files['README.md'].decode())
    [result] = card.data.eval_results
    assert (result.dataset_type, result.dataset_split, result.metric_value) == ('org/imgs', 'test', 75.0)
    assert 'angle-prototype-memory' in card.data.tags and 'subfolder="memory"' in card.text
    # into a repo with a model at its root, the root card stays the model's
    push_to_hub(tiny_model(), 'org/both')
    model_card = hub.files('org/both')['README.md']
    push_path(folder, 'org/both')
    assert hub.files('org/both')['README.md'] == model_card and 'memory/README.md' in hub.files('org/both')


def test_push_license_option_is_checked_when_parsed_and_written(hub, tmp_path, capsys):
    run = make_run(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(['push', str(run), '--repo-id', REPO, '--license', 'apache'])
    assert exit_.value.code == 2 and "licence 'apache' is not one the Hub knows" in capsys.readouterr().err
    assert hub.requests == []
    assert cli.main(['push', str(run), '--repo-id', REPO, '--license', 'mit']) == 0
    assert ModelCard(hub.files(REPO)['README.md'].decode()).data.license == 'mit'
    assert json.loads(hub.files(REPO)['config.json'])['timm_u1']['card']['license'] == 'mit'


def test_card_for_another_repo_id_is_rendered_from_config_data(tmp_path):
    from timm_u1.io.cards import render_card

    kwargs = dict(label_names=list('abcde'), metrics={'top1': 80.5, 'epochs': 2}, dataset='digits',
                  eval_split='test', training='Two epochs.', plots=['curves.png'], base_model='org/base')
    folder = timm_u1.save_pretrained(tiny_model(), tmp_path / 'export', **kwargs)
    config = json.loads((folder / 'config.json').read_text())
    expected = timm_u1.save_pretrained(tiny_model(), tmp_path / 'direct', repo_id='org/final', **kwargs)
    assert render_card(config, 'org/final') == (expected / 'README.md').read_text()


def test_memory_card_of_a_local_backbone_names_the_folder_not_the_path(tmp_path):
    """memory.json records the builder's path; the card must neither publish it nor give a recipe that fails."""
    from timm_u1.io.cards import render_memory_card

    meta = {'backbone': 'local-dir:/home/someone/runs/digits/export', 'num_bins': 8}
    card = ModelCard(render_memory_card(meta, repo_id='org/mem', path_in_repo='memory', backbone=meta['backbone']))
    assert '/home/someone' not in card.text and '`export`, a local model folder' in card.text
    assert 'create_model_from_spec("hf-hub:ORG/BACKBONE")' in card.text
    hub_card = ModelCard(render_memory_card({'num_bins': 8}, repo_id='org/mem', backbone=f'hf-hub:{REPO}', base_model=REPO))
    assert 'create_model_from_spec(memory.backbone)' in hub_card.text and hub_card.data.base_model == REPO


@pytest.mark.parametrize('option, value, words', [
    ('--repo-id', 'just-a-name', 'must be a Hub repo id ORG/NAME'),
    ('--repo-id', 'org/name@dev', 'without @REVISION'),
    ('--endpoint', 'huggingface.co', 'must be a URL'),
    ('--path-in-repo', '../elsewhere', 'must be a folder inside the repo'),
    ('--license', 'apache', "not one the Hub knows"),
])
def test_push_options_are_checked_when_parsed(tmp_path, capsys, option, value, words):
    argv = ['push', str(tmp_path), '--repo-id', REPO, option, value]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f'argument {option}' in err and words in err
