"""Choosing a dataset's image and label columns and its evaluation split, in the library and the commands."""
import json
import logging

import numpy as np
import pytest
from PIL import Image

import datasets

import timm_u1.data
from timm_u1 import data as D
from timm_u1.cli import main as cli_main

COARSE = ['mammal', 'plant', 'fish']
FINE = ['cat', 'dog', 'fern', 'oak', 'trout', 'eel']


def _cifar_like(n: int, seed: int = 0, unlabelled: bool = False) -> datasets.Dataset:
    """CIFAR-100's layout: images in 'img', two ClassLabel columns, 'fine_label' and 'coarse_label'."""
    rng = np.random.default_rng(seed)
    feats = datasets.Features({
        'img': datasets.Image(),
        'fine_label': datasets.ClassLabel(names=FINE),
        'coarse_label': datasets.ClassLabel(names=COARSE),
        'depth': datasets.Image(),
        'score': datasets.Value('float32'),
    })
    fine = [i % len(FINE) for i in range(n)]
    return datasets.Dataset.from_dict({
        'img': [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(n)],
        'fine_label': [-1] * n if unlabelled else fine,
        'coarse_label': [-1] * n if unlabelled else [f // 2 for f in fine],
        'depth': [Image.new('L', (4, 4), 200 + i) for i in range(n)],
        'score': [0.5] * n,
    }, features=feats)


@pytest.fixture(scope='module')
def imagenet_like(tmp_path_factory):
    """train / validation / test, the test split unlabelled (label -1), as ImageNet-1k on the Hub."""
    path = tmp_path_factory.mktemp('data') / 'dd'
    datasets.DatasetDict({
        'train': _cifar_like(16), 'validation': _cifar_like(8, seed=1), 'test': _cifar_like(8, seed=2, unlabelled=True),
    }).save_to_disk(str(path))
    return path


def test_label_column_chooses_coarse_label(imagenet_like):
    default = D.load_image_dataset(str(imagenet_like), 'train')
    assert D.class_names(default) == FINE  # the conventional name wins by default
    coarse = D.load_image_dataset(str(imagenet_like), 'train', label_column='coarse_label')
    assert D.class_names(coarse) == COARSE
    assert coarse['label'] == [(i % 6) // 2 for i in range(16)]
    assert 'fine_label' not in coarse.column_names or coarse.features['fine_label'] != coarse.features['label']
    # the evaluation split is encoded with the training split's classes, from the same column
    val = D.load_image_dataset(str(imagenet_like), 'validation', label_column='coarse_label', class_names=COARSE)
    assert D.class_names(val) == COARSE and val['label'] == [(i % 6) // 2 for i in range(8)]
    stream = D.load_image_dataset(str(imagenet_like), 'train', label_column='coarse_label', streaming=True)
    assert D.class_names(stream) == COARSE and [r['label'] for r in stream] == coarse['label']


def test_image_column_chooses_one_of_two_image_columns(imagenet_like):
    ds = D.load_image_dataset(str(imagenet_like), 'train', image_column='depth')
    assert ds[3]['image'].getpixel((0, 0)) == 203 and ds[3]['image'].size == (4, 4)
    assert D.load_image_dataset(str(imagenet_like), 'train')[0]['image'].size == (8, 8)


def test_a_column_given_that_is_missing_names_the_columns(imagenet_like):
    for option in ('image_column', 'label_column'):
        with pytest.raises(ValueError) as info:
            D.load_image_dataset(str(imagenet_like), 'train', **{option: 'nope'})
        message = str(info.value)
        assert "'nope'" in message and '\n' not in message
        for column in ('img', 'fine_label', 'coarse_label', 'depth', 'score'):
            assert repr(column) in message
        assert f"--{option.replace('_', '-')}" in message


def test_a_column_given_of_the_wrong_kind_is_refused(imagenet_like):
    with pytest.raises(ValueError, match="'score'.*not a class label"):
        D.load_image_dataset(str(imagenet_like), 'train', label_column='score')
    with pytest.raises(ValueError, match="'fine_label'.*not an image"):
        D.load_image_dataset(str(imagenet_like), 'train', image_column='fine_label')


def test_eval_split_is_validation_when_test_has_no_labels(imagenet_like, caplog):
    with caplog.at_level(logging.INFO, logger='timm_u1'):
        assert D.choose_eval_split(str(imagenet_like)) == 'validation'
    assert any("'validation'" in r.getMessage() and "'test'" in r.getMessage() for r in caplog.records)


def test_eval_split_is_test_when_it_is_labelled(caplog):
    with caplog.at_level(logging.INFO, logger='timm_u1'):
        assert D.choose_eval_split(D.DIGITS) == 'test'
    assert any("'test'" in r.getMessage() for r in caplog.records)


def test_a_source_without_a_labelled_eval_split_is_an_error_naming_the_fix(tmp_path):
    datasets.DatasetDict({'train': _cifar_like(4), 'test': _cifar_like(4, unlabelled=True)}).save_to_disk(
        str(tmp_path / 'dd'))
    with pytest.raises(ValueError, match='pass --eval-split NAME') as info:
        D.choose_eval_split(str(tmp_path / 'dd'), split_option='--eval-split')
    assert "'test' split has no labels" in str(info.value) and '\n' not in str(info.value)


def _imagenet_folder(root, classes=('cat', 'dog', 'eel'), per_class=2, test_folder=True):
    """ImageNet's folder layout: train/ and val/ with class sub-folders, and an unlabelled flat test/."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)).save(root / split / c / f'{i}.png')
    if test_folder:
        (root / 'test').mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)).save(root / 'test' / f'{i}.png')
    return root


def test_image_folder_with_val_and_an_unlabelled_test_folder(tmp_path):
    root = _imagenet_folder(tmp_path / 'inet')
    train = D.load_image_dataset(str(root), 'train')
    assert D.class_names(train) == ['cat', 'dog', 'eel'] and sorted(train['label']) == [0, 0, 1, 1, 2, 2]
    assert D.choose_eval_split(str(root)) == 'validation'
    val = D.load_image_dataset(str(root), 'validation', class_names=D.class_names(train))
    assert sorted(val['label']) == [0, 0, 1, 1, 2, 2]


def test_a_missing_split_suggests_the_option_and_split_to_pass(tmp_path):
    root = _imagenet_folder(tmp_path / 'inet', test_folder=False)
    for asked in ('test', 'val'):
        with pytest.raises(ValueError, match='--eval-split validation') as info:
            D.load_image_dataset(str(root), asked, split_option='--eval-split')
        assert '\n' not in str(info.value)
    with pytest.raises(ValueError, match="'validation'"):  # without an option name, the split to pass
        D.load_image_dataset(str(root), 'val')


def test_train_reads_the_chosen_columns_and_evaluates_on_validation(imagenet_like, tmp_path):
    out = tmp_path / 'run'
    code = cli_main(['train', '--data', str(imagenet_like), '--label-column', 'coarse_label', '--model', 'test_resnet',
                     '--img-size', '16', '--batch-size', '8', '--epochs', '1', '--no-progress', '--no-export',
                     '--output', str(out)])
    assert code == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['classes'] == COARSE
    assert summary['args']['eval_split'] == 'validation' and summary['args']['label_column'] == 'coarse_label'
    assert summary['final']['eval_num_samples'] == 8


def test_memory_build_and_eval_read_the_chosen_columns(imagenet_like, tmp_path, capsys):
    out = tmp_path / 'memory'
    assert cli_main(['memory', 'build', '--data', str(imagenet_like), '--label-column', 'coarse_label',
                     '--image-column', 'img', '--img-size', '32', '--output', str(out)]) == 0
    assert json.loads((out / 'memory.json').read_text())['class_names'] == COARSE
    capsys.readouterr()
    assert cli_main(['memory', 'eval', '--memory', str(out), '--data', str(imagenet_like),
                     '--label-column', 'coarse_label']) == 0
    assert '(validation), 8 images' in capsys.readouterr().out  # the labelled eval split, not 'test'


def test_analyze_passes_the_columns_on(imagenet_like, tmp_path, monkeypatch):
    seen = {}
    real = timm_u1.data.load_image_dataset

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(timm_u1.data, 'load_image_dataset', spy)
    assert cli_main(['analyze', '--data', str(imagenet_like), '--split', 'train', '--label-column', 'coarse_label',
                     '--image-column', 'depth', '--model', 'test_resnet', '--controls', 'none', '--permutations', '0',
                     '--output', str(tmp_path / 'a')]) == 0
    assert seen['label_column'] == 'coarse_label' and seen['image_column'] == 'depth'


def test_a_hub_test_split_is_probed_by_streaming_not_downloaded(monkeypatch, caplog):
    """ImageNet-1k on the Hub: train / validation / test, test labelled -1; only one streamed row is read."""
    splits = {'train': _cifar_like(4), 'validation': _cifar_like(4, seed=1), 'test': _cifar_like(4, unlabelled=True)}
    calls = []

    def load_dataset(name, split=None, streaming=False):
        calls.append((split, streaming))
        return splits[split].to_iterable_dataset() if streaming else splits[split]

    monkeypatch.setattr(datasets, 'get_dataset_split_names', lambda name: list(splits))
    monkeypatch.setattr(datasets, 'load_dataset', load_dataset)
    with caplog.at_level(logging.INFO, logger='timm_u1'):
        assert D.choose_eval_split('org/imagenet-like', split_option='--eval-split') == 'validation'
    assert calls == [('test', True), ('validation', True)]
    assert any("'test' split has no labels" in r.getMessage() for r in caplog.records)
    assert D.split_names('org/imagenet-like') == ['train', 'validation', 'test']
    with pytest.raises(ValueError, match='pass --eval-split validation'):
        D.load_image_dataset('org/imagenet-like', 'val', split_option='--eval-split')
