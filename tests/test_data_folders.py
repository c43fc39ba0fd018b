"""timm_u1.data.write_image_folder: any source as the image folder timm's own scripts read."""
import logging
import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

import datasets

import timm_u1
from timm.data import create_dataset
from timm_u1 import data as D


def test_digits_written_as_a_folder_read_the_same_by_datasets_and_timm(tmp_path):
    source = D.load_image_dataset('digits', 'test')
    names = D.class_names(source)
    folder = D.write_image_folder('digits', 'test', tmp_path / 'digits' / 'validation', progress=False)
    back = D.load_image_dataset(str(folder))
    assert D.class_names(back) == names and Counter(back['label']) == Counter(source['label'])
    assert (folder / 'classes.txt').read_text().split() == names
    timm_ds = create_dataset('', root=str(folder))  # timm's ImageFolder reader, as validate.py uses it
    assert timm_ds.reader.class_to_idx == {n: i for i, n in enumerate(names)}
    assert Counter(t for _, t in timm_ds.reader.samples) == Counter(source['label'])
    assert back[0]['image'].mode == 'RGB'
    with pytest.raises(FileExistsError, match='exists'):
        D.write_image_folder('digits', 'test', folder)


def test_unlabelled_rows_leave_no_folder_behind(tmp_path):
    feats = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=['a', 'b', 'c'])})
    imgs = [Image.new('RGB', (4, 4)) for _ in range(3)]
    datasets.Dataset.from_dict({'image': imgs, 'label': [0, -1, 2]}, features=feats).save_to_disk(str(tmp_path / 'dd'))
    with pytest.raises(ValueError, match='row 1'):
        D.write_image_folder(str(tmp_path / 'dd'), None, tmp_path / 'out', progress=False)
    assert sorted(os.listdir(tmp_path)) == ['dd']


def test_an_order_timm_reads_otherwise_is_written_with_a_class_map(tmp_path, caplog):
    feats = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=['c10', 'c2', 'c3'])})
    imgs = [Image.new('RGB', (4, 4), (i * 50, 0, 0)) for i in range(3)]
    datasets.Dataset.from_dict({'image': imgs, 'label': [0, 1, 2]}, features=feats).save_to_disk(str(tmp_path / 'dd'))
    with caplog.at_level(logging.WARNING, logger='timm_u1'):
        folder = D.write_image_folder(str(tmp_path / 'dd'), None, tmp_path / 'out', progress=False)
    assert any('--class-map' in r.getMessage() for r in caplog.records)
    mapped = create_dataset('', root=str(folder), class_map=str(folder / 'classes.txt'))
    assert mapped.reader.class_to_idx == {'c10': 0, 'c2': 1, 'c3': 2}


def test_the_documented_command_writes_both_splits(tmp_path, monkeypatch):
    """docs/training.md's command that makes the digits folder of the timm train.py and validate.py runs
    (its Python, run here rather than in a second interpreter)."""
    doc = (Path(timm_u1.__file__).parents[1] / 'docs' / 'training.md').read_text()
    command = next(line for line in doc.splitlines() if 'write_image_folder as w' in line)
    assert command.startswith('python -c "') and command.endswith('"')
    monkeypatch.chdir(tmp_path)
    exec(command[len('python -c "'):-1], {})
    for split, folder in (('train', 'train'), ('test', 'validation')):
        written = sum(1 for _ in (tmp_path / 'digits' / folder).rglob('*.png'))
        assert written == len(D.load_image_dataset('digits', split))
