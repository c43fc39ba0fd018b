"""timm_u1.studies.scratch (timm-u1 compare): the from-scratch CE vs CE + U(1) study with a validation protocol."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from timm_u1 import data as data_mod
from timm_u1.studies import scratch as study
from timm_u1 import training
from timm_u1.cli import main
from timm_u1.core.loss import U1Loss
from timm_u1.training import evaluate

# the miniature: 16 px, one epoch, a few images; 2 lrs for CE, 1 lambda x 2 lrs for U(1), 2 selection seeds
GRID = dict(lrs=[1e-3, 4e-3], hue_weights=[0.3], selection_seeds=[100, 101], seeds=[0, 1])


@pytest.fixture(scope='module')
def tiny_dataset(tmp_path_factory) -> Path:
    """A save_to_disk DatasetDict: 4 classes of noisy colours, 10 train and 4 test images each."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    colours = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40)]
    rows = {}
    for split, n in (('train', 10), ('test', 4)):
        images, labels = [], []
        for c, colour in enumerate(colours):
            for _ in range(n):
                arr = np.clip(np.array(colour) + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                images.append(PILImage.fromarray(arr))
                labels.append(c)
        rows[split] = Dataset.from_dict({'image': images, 'label': labels}, features=Features(
            {'image': Image(), 'label': ClassLabel(names=[f'c{i}' for i in range(4)])}))
    folder = tmp_path_factory.mktemp('tiny') / 'dd'
    DatasetDict(rows).save_to_disk(str(folder))
    return folder


def _base(data: Path, output: Path) -> training.TrainConfig:
    return training.TrainConfig(output=output, data=str(data), model='test_resnet', img_size=16, epochs=1,
                                batch_size=8, no_progress=True, scale=(0.7, 1.0), hflip=0.0, color_jitter=0.0)


@pytest.fixture(scope='module')
def miniature(tiny_dataset, tmp_path_factory):
    """The whole pipeline, two test seeds, with every (source, split) a training run opened recorded."""
    output = tmp_path_factory.mktemp('study') / 'out'
    opened = []
    original = data_mod.load_image_dataset

    def recording(source, split=None, **kw):
        opened.append((str(source), split))
        return original(source, split, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(data_mod, 'load_image_dataset', recording)
    try:
        result = study.run_study(_base(tiny_dataset, output), GRID['seeds'], GRID['hue_weights'], lrs=GRID['lrs'],
                                 selection_seeds=GRID['selection_seeds'], val_fraction=0.3, bootstrap=200,
                                 command='test')
    finally:
        mp.undo()
    return output, result, opened


def test_miniature_writes_study_table_and_plots(miniature):
    output, result, _ = miniature
    saved = json.loads((output / 'study.json').read_text())
    assert saved['selection'] == result['selection']
    assert (saved['num_train'], saved['num_val'], saved['num_test']) == (28, 12, 16)
    assert [len(saved['selection'][a]['grid']) for a in study.ARMS] == [2, 2]
    for arm in study.ARMS:
        chosen = saved['selection'][arm]['chosen']
        best = max(r['val_top1'] for r in saved['selection'][arm]['grid'])
        assert [r['val_top1'] for r in saved['selection'][arm]['grid']
                if (r['param'], r['lr']) == (chosen['param'], chosen['lr'])] == [best]
        test = saved['test'][arm]
        assert (test['param'], test['lr']) == (chosen['param'], chosen['lr'])
        assert len(test['top1']) == len(test['correct']) == len(test['curves']) == 2
        assert all(len(c) == 16 and set(c) <= {'0', '1'} for c in test['correct'])
    assert saved['selection']['u1']['chosen']['param'] == 0.3
    table = (output / 'table.md').read_text()
    assert '| CE + λ U(1), logits | 0.3, ' in table and 'reference' in table
    assert 'Caution: 2 test seeds' in table  # a miniature says so
    for png in ('paired_differences.png', 'curves.png'):
        assert (output / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_report_regenerates_the_same_table_from_study_json(miniature, capsys):
    output = miniature[0]
    before = (output / 'table.md').read_text()
    (output / 'table.md').unlink()
    (output / 'curves.png').unlink()
    assert main(['compare', '--output', str(output), '--report']) == 0
    assert (output / 'table.md').read_text() == before
    assert (output / 'curves.png').is_file()
    assert before in capsys.readouterr().out


def test_selection_runs_never_read_the_test_split(miniature):
    output, _, opened = miniature
    splits = str(output / 'splits')
    runs = [o for o in opened if o[0] == splits]
    first_test = runs.index((splits, 'test'))
    selection_runs = 2 * (2 + 2)  # selection seeds x (CE lrs + U(1) lambda x lrs)
    assert first_test == 2 * selection_runs + 1  # each run opens train, then its eval split
    assert set(runs[:first_test]) == {(splits, 'train'), (splits, 'validation')}
    for summary in (output / 'selection').glob('*/*/seed*/summary.json'):
        s = json.loads(summary.read_text())
        assert s['args']['eval_split'] == 'validation' and len(s['final_correct']) == 12
    assert len(list((output / 'selection').glob('*/*/seed*/summary.json'))) == selection_runs


def test_splits_are_stratified_disjoint_and_saved(miniature, tiny_dataset):
    from datasets import load_from_disk

    output = miniature[0]
    dd = load_from_disk(str(output / 'splits'))
    source = load_from_disk(str(tiny_dataset))
    assert sorted(dd) == ['test', 'train', 'validation']
    assert np.bincount(dd['validation']['label']).tolist() == [3, 3, 3, 3]
    assert len(dd['train']) + len(dd['validation']) == len(source['train'])
    assert dd['test']['label'] == source['test']['label']
    train_px = {np.asarray(im).tobytes() for im in dd['train']['image']}
    assert not train_px & {np.asarray(im).tobytes() for im in dd['validation']['image']}


def test_a_resumed_study_does_not_retrain_finished_runs(miniature, tiny_dataset, monkeypatch):
    output, result, _ = miniature
    trained = []
    monkeypatch.setattr(study, 'train', lambda config: trained.append(config.output))
    again = study.run_study(_base(tiny_dataset, output), GRID['seeds'], GRID['hue_weights'], lrs=GRID['lrs'],
                            selection_seeds=GRID['selection_seeds'], val_fraction=0.3, bootstrap=200)
    assert trained == []
    assert again['test'] == result['test']


def test_a_resumed_study_continues_an_interrupted_run(miniature, tiny_dataset, monkeypatch):
    """A run folder without summary.json is trained again with resume=True (it continues from its checkpoint)."""
    output = miniature[0]
    run = output / 'test' / 'ce' / 'seed1'
    summary = (run / 'summary.json').read_text()
    (run / 'summary.json').unlink()
    configs = []

    def fake_train(config):
        configs.append(config)
        (run / 'summary.json').write_text(summary)
        return json.loads(summary)

    monkeypatch.setattr(study, 'train', fake_train)
    study.run_study(_base(tiny_dataset, output), GRID['seeds'], GRID['hue_weights'], lrs=GRID['lrs'],
                    selection_seeds=GRID['selection_seeds'], val_fraction=0.3, bootstrap=200)
    assert [c.output for c in configs] == [run] and configs[0].resume and configs[0].eval_split == 'test'


@pytest.mark.parametrize('change, words', [
    (dict(img_size=24), 'img_size'),  # a shared setting
    (dict(hflip=0.5), 'hflip'),  # an option after --
    (dict(epochs=2), 'epochs'),  # extends a run in timm-u1 train, but a study's runs share one budget
])
def test_finished_runs_of_other_settings_are_refused_not_reused(miniature, tiny_dataset, monkeypatch, change, words):
    import dataclasses

    from timm_u1.errors import ResumeMismatchError

    output = miniature[0]
    monkeypatch.setattr(study, 'train', lambda config: pytest.fail('trained'))
    before = (output / 'study.json').read_text()
    with pytest.raises(ResumeMismatchError, match=words):
        study.run_study(dataclasses.replace(_base(tiny_dataset, output), **change), GRID['seeds'],
                        GRID['hue_weights'], lrs=GRID['lrs'], selection_seeds=GRID['selection_seeds'],
                        val_fraction=0.3, bootstrap=200)
    assert (output / 'study.json').read_text() == before  # nothing rewritten


def test_a_changed_choice_does_not_reuse_test_runs_of_the_old_one(miniature, tiny_dataset, monkeypatch):
    """A wider lambda grid may choose another lambda: the old test runs (other lambda) are refused."""
    from timm_u1.errors import ResumeMismatchError

    output = miniature[0]
    monkeypatch.setattr(study, 'train_run', _fake_selection(study.train_run, best_hue_weight=0.7))
    with pytest.raises(ResumeMismatchError, match='hue_weight'):
        study.run_study(_base(tiny_dataset, output), GRID['seeds'], [0.3, 0.7], lrs=GRID['lrs'],
                        selection_seeds=GRID['selection_seeds'], val_fraction=0.3, bootstrap=200)


def _fake_selection(real, best_hue_weight):
    """train_run that fakes new selection runs (so that lambda ``best_hue_weight`` wins) and runs the rest."""
    def train_run(run_dir, base, hue_weight, lr, seed, eval_split, log=print):
        if eval_split == 'validation' and hue_weight == best_hue_weight:
            return {'final': {'eval_top1': 100.0}}
        return real(run_dir, base, hue_weight, lr, seed, eval_split, log=log)
    return train_run


def test_splits_of_other_settings_are_refused(miniature, tiny_dataset):
    with pytest.raises(ValueError, match='holds the splits of'):
        study.make_splits(str(tiny_dataset), miniature[0] / 'splits', 0.5)


@pytest.mark.parametrize('seeds, selection, words', [
    ([0, 1], [1, 2], 'also selection seeds'),
    ([0, 0], [5], 'Seeds must differ'),
    ([0], [5], '>= 2 test seeds'),
])
def test_bad_seeds_are_refused_before_training(seeds, selection, words, tmp_path, monkeypatch):
    monkeypatch.setattr(study, 'train', lambda config: pytest.fail('trained'))
    with pytest.raises(ValueError, match=words):
        study.run_study(_base(Path('digits'), tmp_path / 'out'), seeds, [1.0], selection_seeds=selection)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('command', ['compare', 'finetune'])
def test_an_output_that_is_a_file_is_refused_in_one_line(command, tmp_path, capsys):
    target = tmp_path / 'afile'
    target.write_text('keep me')
    assert main([command, '--output', str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'is a file' in err and '--output' in err
    assert target.read_text() == 'keep me'


@pytest.mark.parametrize('option', ['--epochs', '--img-size', '--model', '--data', '--batch-size'])
def test_cli_refuses_study_options_after_the_separator(option, tmp_path, capsys):
    """compare has its own --epochs etc.; the same option after -- would silently win over it."""
    code = main(['compare', '--output', str(tmp_path / 'o'), '--', option, '5'])
    assert code != 0 and f'{option} after --' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


def test_cli_refuses_per_run_options_after_the_separator(tmp_path, capsys):
    code = main(['compare', '--output', str(tmp_path / 'o'), '--', '--lr', '1e-2'])
    assert code != 0 and '--lr after --' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


def test_per_sample_correctness_adds_up_to_top1():
    torch.manual_seed(0)
    logits = torch.randn(10, 4)
    logits[3] = torch.tensor([1.0, 1.0, 0.0, 0.0])  # a tie: the same pick as timm's accuracy
    target = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    loader = [(logits[:6], target[:6]), (logits[6:], target[6:])]
    m = evaluate(lambda x: x, loader, U1Loss(hue_weight=1.0), per_sample=True)
    assert m['correct'] == (logits.topk(1, 1).indices[:, 0] == target).tolist()
    assert 100 * sum(m['correct']) / 10 == pytest.approx(m['top1'])
    assert 'correct' not in evaluate(lambda x: x, loader, U1Loss(hue_weight=1.0))


def test_run_summary_holds_final_correctness_in_eval_order(miniature, tiny_dataset, tmp_path):
    output = miniature[0]
    for summary in (output / 'test').glob('*/seed*/summary.json'):
        s = json.loads(summary.read_text())
        assert 100 * s['final_correct'].count('1') / len(s['final_correct']) == pytest.approx(s['final']['eval_top1'])
    # a run resumed after its last epoch (summary lost) writes the same string again
    run = output / 'test' / 'ce' / 'seed0'
    first = json.loads((run / 'summary.json').read_text())
    args = argparse.Namespace(**first['args'])
    config = training.TrainConfig(**{k: v for k, v in vars(args).items() if k != 'output'}, output=tmp_path / 'r')
    import shutil
    shutil.copytree(run, tmp_path / 'r')
    (tmp_path / 'r' / 'summary.json').unlink()
    config.resume = True
    again = training.train(config)
    assert again['final_correct'] == first['final_correct']


def test_photo_patches_test_tiles_come_from_unseen_columns(tmp_path):
    pytest.importorskip('skimage')
    from datasets import load_from_disk

    from timm_u1.data import build_photo_patches, photos_dataset

    dd = load_from_disk(str(build_photo_patches(tmp_path / 'pp', tile=4, grid=3, test_columns=1)))
    names = sorted(photos_dataset()['name'])
    assert dd['train'].features['label'].names == names
    assert len(dd['train']) == len(names) * 6 and len(dd['test']) == len(names) * 3
    first = photos_dataset()[0]
    picture = np.asarray(first['image'].convert('RGB').resize((12, 12)))
    label = names.index(first['name'])
    test_tiles = [np.asarray(r['image']) for r in dd['test'] if r['label'] == label]
    assert np.array_equal(test_tiles[0], picture[0:4, 8:12])  # row 0, last column
    train_tiles = [np.asarray(r['image']) for r in dd['train'] if r['label'] == label]
    assert not any(np.array_equal(t, picture[0:4, 8:12]) for t in train_tiles)
