"""The one resumable, locked, shardable pass over a dataset (timm_u1.runs.stream)."""
import json

import pytest
import torch

from timm_u1.errors import ResumeMismatchError, RunLockedError
from timm_u1.runs import RunFolder, StreamPass, pass_identity

DATA = torch.arange(23, dtype=torch.float64).reshape(23, 1) * torch.tensor([1.0, 0.5, -2.0])


class Sum:
    """A toy accumulator: the running sum of the rows read, and which rows, in order."""

    def __init__(self):
        self.total = torch.zeros(3, dtype=torch.float64)
        self.rows = []

    def update(self, positions: range) -> None:
        self.total += DATA[positions.start:positions.stop].sum(0)
        self.rows.extend(positions)

    def state_dict(self):
        return {'total': self.total, 'rows': torch.tensor(self.rows, dtype=torch.long)}

    def load_state_dict(self, state):
        self.total, self.rows = state['total'].clone(), state['rows'].tolist()


class Stop(Exception):
    pass


def run_pass(folder, identity=None, batch_size=4, stop_after=None, **kw):
    """One pass over DATA's 23 rows; ``stop_after`` batches, it dies as a killed process would."""
    acc = Sum()
    with StreamPass(folder, '.toy', len(DATA), batch_size, identity or {'setting': 1}, every=0, **kw) as stream:
        stream.restore(acc)
        first = stream.remaining.start
        for step, start in enumerate(range(first, stream.shard.stop, batch_size)):
            if stop_after is not None and step == stop_after:
                raise Stop
            batch = range(start, min(start + batch_size, stream.shard.stop))
            acc.update(batch)
            stream.advance(acc, len(batch))
        parts = stream.gather(acc)
        stream.finish()
    return acc, parts, first


def test_a_pass_stopped_after_any_batch_resumes_to_the_uninterrupted_result(tmp_path):
    whole, parts, _ = run_pass(tmp_path / 'whole')
    assert whole.rows == list(range(23)) and parts == [whole]
    for stop_after in range(0, 6):
        folder = tmp_path / f'stop{stop_after}'
        with pytest.raises(Stop):
            run_pass(folder, stop_after=stop_after)
        resumed, _, first = run_pass(folder)
        assert first == 4 * stop_after  # after the batches the checkpoint held, none read twice
        assert resumed.rows == whole.rows
        assert torch.equal(resumed.total, whole.total)  # bitwise: the same batches, added in the same order
        assert not list(folder.glob('.toy*'))  # finish() removed the checkpoint


def test_another_identity_is_refused_naming_the_difference_and_the_checkpoint_is_kept(tmp_path):
    with pytest.raises(Stop):
        run_pass(tmp_path, {'setting': 1}, stop_after=2)
    before = (tmp_path / '.toy.safetensors').read_bytes()
    with pytest.raises(ResumeMismatchError, match=r'setting: 1 there, 2 now'):
        run_pass(tmp_path, {'setting': 2})
    with pytest.raises(ResumeMismatchError, match=r'batch_size: 4 there, 5 now'):
        run_pass(tmp_path, {'setting': 1}, batch_size=5)  # other batches: another pass
    assert (tmp_path / '.toy.safetensors').read_bytes() == before
    acc, _, first = run_pass(tmp_path, {'setting': 2}, overwrite=True)
    assert first == 0 and acc.rows == list(range(23))


def test_checkpoints_of_another_number_of_processes_are_refused(tmp_path):
    (tmp_path / '.toy.rank1of2.safetensors').write_bytes(b'x')
    with pytest.raises(ResumeMismatchError, match='another number of processes'):
        run_pass(tmp_path)
    run_pass(tmp_path, overwrite=True)
    assert not (tmp_path / '.toy.rank1of2.safetensors').exists()


def test_the_folder_is_locked_while_the_pass_runs(tmp_path):
    with StreamPass(tmp_path, '.toy', 8, 4, {}):
        with pytest.raises(RunLockedError):
            RunFolder(tmp_path).acquire()
    with RunFolder(tmp_path):  # released
        pass


def _damage(path, field, value):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework='pt') as f:
        meta = dict(f.metadata())
    if value is None:
        del meta[field]
    else:
        meta[field] = value
    save_file(load_file(str(path)), str(path), metadata=meta)


@pytest.mark.parametrize('field, value', [
    ('format', 'other'), ('identity', '[1, 2]'), ('identity', '{not json'), ('identity', None),
    ('images_done', '-1'), ('images_done', '1e3'), ('images_done', '999'), ('extras', '"text"'), ('extras', None)])
def test_a_damaged_checkpoint_field_is_a_one_line_error_naming_it(tmp_path, field, value):
    with pytest.raises(Stop):
        run_pass(tmp_path, stop_after=2)
    _damage(tmp_path / '.toy.safetensors', field, value)
    with pytest.raises(ValueError, match=f'"{field}"') as e:
        run_pass(tmp_path)
    assert '\n' not in str(e.value) and '--overwrite' in str(e.value)


def test_a_checkpoint_that_does_not_fit_the_accumulator_is_refused(tmp_path):
    with pytest.raises(Stop):
        run_pass(tmp_path, stop_after=2)
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = tmp_path / '.toy.safetensors'
    with safe_open(str(path), framework='pt') as f:
        meta = f.metadata()
    save_file({'rows': load_file(str(path))['rows']}, str(path), metadata=meta)  # 'total' lost
    with pytest.raises(ValueError, match='does not fit'):
        run_pass(tmp_path)


def test_the_identity_holds_what_the_images_are(tmp_path):
    """Images replaced in place, under the same names and labels, make another identity."""
    import os

    from PIL import Image

    from timm_u1.data import load_image_dataset

    for c in ('a', 'b'):
        (tmp_path / 'images' / c).mkdir(parents=True)
        for i in range(2):
            Image.new('RGB', (8, 8), (40 * i, 0, 0)).save(tmp_path / 'images' / c / f'{i}.png')
    identity = pass_identity({'k': 1}, data=load_image_dataset(str(tmp_path / 'images')))
    assert json.loads(json.dumps(identity)) == identity and identity['data_fingerprint'].startswith('data:')
    path = tmp_path / 'images' / 'a' / '0.png'
    stat = path.stat()
    Image.new('RGB', (8, 8), (0, 0, 250)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    again = pass_identity({'k': 1}, data=load_image_dataset(str(tmp_path / 'images')))
    assert again['data_fingerprint'] != identity['data_fingerprint']
