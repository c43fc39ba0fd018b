"""timm_u1.data: embedded sources, dataset resolution, RGB conversion, loaders."""
import logging
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets

from timm_u1 import data as D

pytest.importorskip('sklearn')


def test_digits_split_is_stratified_complete_and_deterministic():
    dd = D.digits_dataset()
    assert set(dd) == {'train', 'test'}
    train, test = dd['train'], dd['test']
    assert len(train) + len(test) == 1797
    assert len(test) == 450  # ceil(0.25 * 1797), sklearn's rounding
    assert D.class_names(train) == [str(i) for i in range(10)]
    assert isinstance(train.features['image'], datasets.Image)
    train_counts, test_counts = Counter(train['label']), Counter(test['label'])
    assert set(train_counts) == set(test_counts) == set(range(10))
    for c in range(10):  # stratified: every class keeps ~25 % of its images in test
        frac = test_counts[c] / (train_counts[c] + test_counts[c])
        assert abs(frac - 0.25) < 0.02, (c, frac)
    # deterministic for a seed, different for another seed
    again = D.digits_dataset()
    assert again['test']['label'] == test['label']
    assert np.array_equal(np.asarray(again['test'][7]['image']), np.asarray(test[7]['image']))
    other = D.digits_dataset(seed=1)
    assert other['test']['label'] != test['label']


def test_digits_images_are_8x8_grey_scaled_to_255():
    from sklearn.datasets import load_digits

    ds = D.digits_dataset()['train']
    img = ds[0]['image']
    assert img.mode == 'L' and img.size == (8, 8)
    pixels = np.stack([np.asarray(ds[i]['image']) for i in range(50)])
    assert pixels.max() == 255 and pixels.min() == 0
    # the 0..16 -> 0..255 scaling is exact on the original values
    ref = load_digits()
    flat = {bytes(np.rint(im * 255 / 16).astype(np.uint8).tobytes()) for im in ref.images}
    assert all(p.tobytes() in flat for p in pixels)


def test_load_image_dataset_digits_and_photos():
    train = D.load_image_dataset('digits')
    test = D.load_image_dataset(D.DIGITS, 'test')
    assert len(train) == 1347 and len(test) == 450
    with pytest.raises(ValueError, match="splits are \\['train', 'test'\\]"):
        D.load_image_dataset('digits', 'validation')
    pytest.importorskip('skimage')
    photos = D.load_image_dataset(D.PHOTOS)
    assert 'label' not in photos.column_names and D.class_names(photos) is None
    names = photos['name']
    assert {'chelsea', 'coffee', 'rocket'} <= set(names)
    # every photograph shipped in scikit-image (colour and greyscale) and scikit-learn
    assert len(photos) == 20 and {'camera', 'moon', 'microaneurysms', 'china', 'flower'} <= set(names)
    for row in photos:  # greyscale files decode as RGB; microaneurysms is the smallest (102 x 102)
        assert row['image'].mode == 'RGB' and min(row['image'].size) >= 100
    # every mapped photo exists, and every mapped class is a valid ImageNet-1k index
    assert set(D.PHOTO_IMAGENET_CLASSES) <= set(names)
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    assert all('cat' in info.index_to_description(i) for i in D.PHOTO_IMAGENET_CLASSES['chelsea'])


def _write_image_folder(root, n_per_class=3, classes=('cat', 'dog')):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / c / f'{i}.png')
    return root


def test_load_image_dataset_image_folder(tmp_path):
    root = _write_image_folder(tmp_path / 'imgs')
    ds = D.load_image_dataset(str(root))
    assert len(ds) == 6
    assert D.class_names(ds) == ['cat', 'dog']
    assert sorted(Counter(ds['label']).values()) == [3, 3]
    assert ds[0]['image'].size == (10, 12)


def test_load_image_dataset_save_to_disk(tmp_path):
    # a Hub-like layout: column 'img' and ClassLabel 'fine_label', plus a second ClassLabel
    feats = datasets.Features({
        'img': datasets.Image(),
        'coarse_label': datasets.ClassLabel(names=['x', 'y']),
        'fine_label': datasets.ClassLabel(names=['a', 'b', 'c']),
    })
    imgs = [Image.new('RGB', (4, 4), (i * 40, 0, 0)) for i in range(3)]
    ds = datasets.Dataset.from_dict({'img': imgs, 'coarse_label': [0, 1, 0], 'fine_label': [2, 0, 1]}, features=feats)
    dd = datasets.DatasetDict({'validation': ds, 'holdout': ds.select([0])})
    dd.save_to_disk(str(tmp_path / 'dd'))
    ds.save_to_disk(str(tmp_path / 'single'))

    single = D.load_image_dataset(str(tmp_path / 'single'))
    assert 'image' in single.column_names and single['label'] == [2, 0, 1]
    assert D.class_names(single) == ['a', 'b', 'c']
    assert D.load_image_dataset(str(tmp_path / 'dd'), 'holdout').num_rows == 1
    with pytest.raises(ValueError, match='holdout'):  # no 'train' and two splits: the error lists them
        D.load_image_dataset(str(tmp_path / 'dd'))


def test_int_and_string_label_columns_become_classlabels(tmp_path):
    imgs = [Image.new('L', (3, 3), i) for i in range(3)]
    ds = datasets.Dataset.from_dict({'image': imgs, 'target': [0, 2, 2]})
    ds.save_to_disk(str(tmp_path / 'ints'))
    out = D.load_image_dataset(str(tmp_path / 'ints'))
    assert D.class_names(out) == ['0', '1', '2'] and out['label'] == [0, 2, 2]

    ds = datasets.Dataset.from_dict({'image': imgs, 'labels': ['b', 'a', 'b']})
    ds.save_to_disk(str(tmp_path / 'strs'))
    out = D.load_image_dataset(str(tmp_path / 'strs'))
    assert D.class_names(out) == ['a', 'b'] and out['label'] == [1, 0, 1]


def test_unknown_sources_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match='no such directory'):
        D.load_image_dataset(str(tmp_path / 'missing'))
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    with pytest.raises(ValueError, match='sub-folder per class'):
        D.load_image_dataset(str(tmp_path / 'empty'))

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/some-set' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, 'get_dataset_split_names', offline)
    monkeypatch.setattr(datasets, 'load_dataset', offline)
    with pytest.raises(ConnectionError, match='Hub cannot be reached') as info:
        D.load_image_dataset('someone/some-set')
    assert "'digits'" in str(info.value) and 'save_to_disk' in str(info.value)


def _rows(images):
    return datasets.Dataset.from_dict({'image': images}, features=datasets.Features({'image': datasets.Image()}))


def test_transform_dataset_converts_every_mode_to_rgb():
    grey = Image.new('L', (5, 4), 200)
    rgba = Image.new('RGBA', (5, 4), (255, 0, 0, 0))  # fully transparent red: black after compositing
    pal = Image.new('P', (5, 4), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    deep = Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16))
    ds = _rows([grey, rgba, pal, deep])
    assert deep.mode.startswith('I')
    tds = D.TransformDataset(ds, lambda im: torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    out = [tds[i] for i in range(len(tds))]
    assert all(x.shape == (3, 4, 5) and label == -1 for x, label in out)
    assert out[0][0].unique().tolist() == [200]
    assert out[1][0].max() == 0
    assert out[2][0][:, 0, 0].tolist() == [0, 255, 0]
    assert out[3][0].unique().tolist() == [255]  # 16-bit white stays white, not clipped garbage
    # picklable (DataLoader workers) and return_index
    clone = pickle.loads(pickle.dumps(D.TransformDataset(ds, None, return_index=True)))
    img, label, index = clone[2]
    assert img.mode == 'RGB' and index == 2 and label == -1


def test_transform_dataset_names_row_of_broken_image(tmp_path):
    good = tmp_path / 'good.png'
    Image.new('RGB', (4, 4)).save(good)
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not an image at all')
    ds = datasets.Dataset.from_dict({'image': [str(good), str(bad)], 'label': [0, 1]})
    ds = ds.cast_column('image', datasets.Image())
    tds = D.TransformDataset(ds)
    assert tds[0][0].size == (4, 4)
    with pytest.raises(RuntimeError, match='row 1') as info:
        tds[1]
    assert 'bad.png' in str(info.value)


def test_make_loader_uses_model_data_config():
    timm = pytest.importorskip('timm')
    model = timm.create_model('resnet10t', num_classes=10, pretrained_cfg_overlay=dict(input_size=(3, 32, 32)))
    ds = D.load_image_dataset('digits', 'test').select(range(5))
    loader = D.make_loader(ds, model, batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert y.tolist() == ds['label'][:4]
    # a data-config dict works too, and its normalisation is applied
    loader = D.make_loader(ds, dict(input_size=(3, 16, 16), mean=(0.0,) * 3, std=(1.0,) * 3), batch_size=5)
    x, _ = next(iter(loader))
    assert x.shape == (5, 3, 16, 16) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 1])  # grey digits become equal RGB channels
    with pytest.raises(TypeError, match='data-config dict'):
        D.make_loader(ds, 'resnet18')


def test_cached_sources_do_not_share_state():
    dd = D.digits_dataset()
    del dd['test']
    assert 'test' in D.digits_dataset()
    ds = D.digits_dataset()['train']
    ds.set_format('numpy')
    assert D.digits_dataset()['train'].format['type'] is None
    pytest.importorskip('skimage')
    photos = D.photos_dataset()
    photos.set_transform(lambda batch: batch)
    assert D.photos_dataset().format['type'] is None


# --- issue 10 / 12: one class list per run, single-Dataset folders, one-class folders, streaming --

def test_class_names_apply_one_encoding_to_every_split(tmp_path):
    imgs = [Image.new('L', (3, 3), i) for i in range(3)]
    datasets.DatasetDict({
        'train': datasets.Dataset.from_dict({'image': imgs, 'label': ['a', 'c', 'b']}),
        'test': datasets.Dataset.from_dict({'image': imgs[:2], 'label': ['c', 'b']}),
        'odd': datasets.Dataset.from_dict({'image': imgs[:2], 'label': ['b', 'zebra']}),
    }).save_to_disk(str(tmp_path / 'dd'))
    train = D.load_image_dataset(str(tmp_path / 'dd'), 'train')
    names = D.class_names(train)
    assert names == ['a', 'b', 'c']
    test = D.load_image_dataset(str(tmp_path / 'dd'), 'test', class_names=names)
    assert D.class_names(test) == names and test['label'] == [2, 1]
    with pytest.raises(ValueError, match="'zebra'"):
        D.load_image_dataset(str(tmp_path / 'dd'), 'odd', class_names=names)
    # a ClassLabel split with its own (shorter) name list is remapped by name
    feats = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=['b', 'c'])})
    datasets.Dataset.from_dict({'image': imgs[:2], 'label': [1, 0]}, features=feats).save_to_disk(str(tmp_path / 'cl'))
    cl = D.load_image_dataset(str(tmp_path / 'cl'), class_names=names)
    assert D.class_names(cl) == names and cl['label'] == [2, 1]


def test_single_dataset_folder_is_its_train_split(tmp_path):
    imgs = [Image.new('L', (3, 3), i) for i in range(3)]
    datasets.Dataset.from_dict({'image': imgs, 'label': [0, 1, 2]}).save_to_disk(str(tmp_path / 'single'))
    assert D.load_image_dataset(str(tmp_path / 'single'), 'train')['label'] == [0, 1, 2]
    with pytest.raises(ValueError, match='--eval-data'):
        D.load_image_dataset(str(tmp_path / 'single'), 'test')


def test_one_class_image_folder_has_one_class(tmp_path):
    root = _write_image_folder(tmp_path / 'one', classes=('cat',))
    ds = D.load_image_dataset(str(root))
    assert D.class_names(ds) == ['cat'] and ds['label'] == [0, 0, 0]


def test_streaming_reads_rows_lazily_with_the_same_labels(tmp_path):
    root = _write_image_folder(tmp_path / 'imgs', classes=('cat', 'dog', 'eel'))
    eager = D.load_image_dataset(str(root))
    stream = D.load_image_dataset(str(root), streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    assert D.class_names(stream) == D.class_names(eager)
    assert sorted(r['label'] for r in stream) == sorted(eager['label'])
    eager.save_to_disk(str(tmp_path / 'saved'))
    saved = D.load_image_dataset(str(tmp_path / 'saved'), streaming=True)
    assert isinstance(saved, datasets.IterableDataset) and [r['label'] for r in saved] == eager['label']
    loader = D.make_loader(saved, dict(input_size=(3, 8, 8)), batch_size=4, train=True)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 1] and batches[0][0].shape == (4, 3, 8, 8)


def test_streaming_a_source_that_cannot_stream_is_an_error(tmp_path):
    imgs = [Image.new('L', (3, 3), i) for i in range(3)]
    datasets.Dataset.from_dict({'image': imgs, 'label': ['b', 'a', 'b']}).save_to_disk(str(tmp_path / 'strs'))
    with pytest.raises(ValueError, match='stream'):  # class names of a string column need a full read
        D.load_image_dataset(str(tmp_path / 'strs'), streaming=True)
    with pytest.raises(ValueError, match='stream'):
        D.load_image_dataset(D.PHOTOS, streaming=True)


def _two_class_folder(root: Path) -> Path:
    for name, colour in (('cat', (200, 50, 0)), ('dog', (0, 50, 200))):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new('RGB', (8, 8), colour).save(root / name / f'{i}.png')
    return root


def test_a_file_name_that_is_not_utf8_is_named_before_loading(tmp_path):
    root = _two_class_folder(tmp_path / 'images')
    Image.new('RGB', (8, 8)).save(os.fsencode(root / 'cat') + b'/\xff\xfe.png')  # a Latin-1 name, say
    with pytest.raises(ValueError, match=r"cat/\\udcff\\udcfe\.png.*not UTF-8.*Rename it"):
        D.load_image_dataset(str(root))


def test_a_symlink_loop_is_listed_not_dropped_silently(tmp_path, caplog):
    root = _two_class_folder(tmp_path / 'images')
    (root / 'dog' / 'loop').symlink_to('..')
    (root / 'cat' / 'gone.png').symlink_to(tmp_path / 'nowhere.png')
    with caplog.at_level(logging.WARNING, logger='timm_u1'):
        ds = D.load_image_dataset(str(root))
    assert len(ds) == 4 and D.class_names(ds) == ['cat', 'dog']
    skipped = ' '.join(r.getMessage() for r in caplog.records)
    assert str(root / 'dog' / 'loop') in skipped and str(root / 'cat' / 'gone.png') in skipped
