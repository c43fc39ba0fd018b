"""timm_u1.files and timm_u1.data.fingerprint: atomic writes that leave nothing behind, and the data part of
a run's identity."""
import errno
import os
import socket
import stat
import subprocess
import sys

import pytest
from PIL import Image

from timm_u1.data import load_image_dataset
from timm_u1.data.fingerprint import data_fingerprint, stream_fingerprint
from timm_u1.errors import OutputNotWritableError
from timm_u1.files import atomic_path, write_text


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / 'report.json'
    host = socket.gethostname()
    dead = tmp_path / f'.report.json.{host}-{_dead_pid()}.abc123.tmp'
    alive = tmp_path / f'.report.json.{host}-{os.getpid()}.def456.tmp'  # a write under way in this process
    other = tmp_path / '.memory.json.x-1.abc.tmp'  # another file's temp is not this write's business
    for p in (dead, alive, other):
        p.write_text('half')
    write_text(target, '{}')
    assert target.read_text() == '{}'
    assert not dead.exists() and alive.exists() and other.exists()


def test_the_result_has_the_usual_permissions_whatever_the_writer_used(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    with atomic_path(tmp_path / 'memory.safetensors') as tmp:
        tmp.write_bytes(b'x')
        os.chmod(tmp, 0o600)  # what safetensors and mkstemp do
    assert stat.S_IMODE((tmp_path / 'memory.safetensors').stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EROFS])
def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, code):
    target = tmp_path / 'checkpoint.pt'
    write_text(target, 'previous')

    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, 'replace', full)
    reason = 'the disk is full' if code == errno.ENOSPC else 'the file system is read-only'
    with pytest.raises(OutputNotWritableError, match=f'cannot write {target}: {reason}'):
        write_text(target, 'new')
    assert target.read_text() == 'previous'
    assert [p.name for p in tmp_path.iterdir()] == ['checkpoint.pt']


def _folder(root, colour):
    for cls in ('a', 'b', 'c'):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.new('RGB', (8, 8), (colour, 40 * i, 0)).save(root / cls / f'{i}.png')
    return root


def test_replacing_images_in_place_changes_the_fingerprint(tmp_path):
    root = _folder(tmp_path / 'images', 10)
    before = data_fingerprint(load_image_dataset(str(root)))
    assert data_fingerprint(load_image_dataset(str(root))) == before  # the same data: the same identity
    Image.new('RGB', (8, 8), (200, 0, 0)).save(root / 'b' / '1.png')  # same name, same label, new pixels
    os.utime(root / 'b' / '1.png', ns=(1, 10 ** 18))  # even with a later modification time set by hand
    assert data_fingerprint(load_image_dataset(str(root))) != before


def test_embedded_images_labels_and_order_are_part_of_the_fingerprint(tmp_path):
    root = _folder(tmp_path / 'images', 10)
    ds = load_image_dataset(str(root))
    ds.save_to_disk(str(tmp_path / 'saved'))  # the image bytes now live in the dataset
    saved = load_image_dataset(str(tmp_path / 'saved'))
    base = data_fingerprint(saved)
    assert base.startswith('data:')
    assert data_fingerprint(saved.select([1, 0, 2, 3, 4, 5])) != base
    relabelled = saved.map(lambda row: {'label': (row['label'] + 1) % 3})
    assert data_fingerprint(relabelled) != base
    _folder(tmp_path / 'other', 11).rename(tmp_path / 'other2')
    other = load_image_dataset(str(tmp_path / 'other2'))
    other.save_to_disk(str(tmp_path / 'saved2'))
    assert data_fingerprint(load_image_dataset(str(tmp_path / 'saved2'))) != base  # other pixels, same labels


def test_a_streamed_dataset_is_named_not_hashed():
    digits = load_image_dataset('digits', streaming=True)
    with pytest.raises(TypeError, match='stream_fingerprint'):
        data_fingerprint(digits)
    key = stream_fingerprint(digits, 'digits', 'train', [str(i) for i in range(10)])
    assert key.startswith('stream:') and key == stream_fingerprint(digits, 'digits', 'train', [str(i) for i in range(10)])
    assert key != stream_fingerprint(digits, 'digits', 'test', [str(i) for i in range(10)])
