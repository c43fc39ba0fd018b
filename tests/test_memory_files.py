"""A memory's two files: consistent under a kill at any point of a save, every field and tensor checked
when loaded, written with the usual permissions."""
import json
import os
import signal
import stat

import pytest
import torch

from timm_u1.memory import MEMORY_CONFIG, MEMORY_WEIGHTS, AnglePrototypeMemory

DATA_CONFIG = {'input_size': (3, 32, 32), 'interpolation': 'bicubic', 'mean': (0.5, 0.5, 0.5),
               'std': (0.25, 0.25, 0.25), 'crop_pct': 0.875, 'crop_mode': 'center'}


def make(seed: int, images: int = 6, mode: str = 'instance') -> AnglePrototypeMemory:
    g = torch.Generator().manual_seed(seed)
    memory = AnglePrototypeMemory(list('abc'), mode=mode, num_bins=4, fingerprint='sha256:x', backbone='m',
                                  data_config=DATA_CONFIG)
    memory.add_features(torch.rand(images, 6, 3, 3, generator=g), torch.arange(images) % 3)
    return memory


def same(a: AnglePrototypeMemory, b: AnglePrototypeMemory) -> bool:
    queries = torch.rand(5, 6, 3, 3, generator=torch.Generator().manual_seed(99))
    return a.num_images == b.num_images and all(
        torch.equal(a.scores_from_features(queries, m), b.scores_from_features(queries, m)) for m in a.methods)


# --- a kill at any point of a save leaves a memory that loads ------------------------------------

def save_killed_at(memory: AnglePrototypeMemory, folder, kill_at: int) -> bool:
    """Save ``memory`` in a forked process that kill -9s itself just before its ``kill_at``-th file
    rename; True if it was killed (False: the save had fewer renames and finished)."""
    pid = os.fork()
    if pid == 0:
        try:
            real, calls = os.replace, []

            def replace(*a, **kw):
                calls.append(1)
                if len(calls) == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*a, **kw)

            os.replace = replace
            memory.save_pretrained(folder)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_a_save_killed_before_any_rename_leaves_the_old_or_the_new_memory_whole(tmp_path):
    old, new = make(0), make(1, images=9)
    kills = 0
    for kill_at in range(1, 12):
        folder = tmp_path / f'kill{kill_at}'
        old.save_pretrained(folder)
        if not save_killed_at(new, folder, kill_at):
            assert same(AnglePrototypeMemory.from_pretrained(folder), new)
            break
        kills += 1
        loaded = AnglePrototypeMemory.from_pretrained(folder)  # never "corrupt": one whole memory or the other
        assert same(loaded, old) or same(loaded, new), kill_at
        new.save_pretrained(folder)  # and the next save goes through
        assert same(AnglePrototypeMemory.from_pretrained(folder), new)
        assert sorted(p.name for p in folder.iterdir()) == [MEMORY_CONFIG, MEMORY_WEIGHTS]  # nothing left behind
    assert kills >= 2  # at least between the two files' renames


def test_memory_files_have_the_usual_permissions(tmp_path):
    folder = make(0).save_pretrained(tmp_path / 'm')
    umask = os.umask(0)
    os.umask(umask)
    for name in (MEMORY_CONFIG, MEMORY_WEIGHTS):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~umask, name


# --- every field of memory.json is checked -------------------------------------------------------

BAD_FIELDS = [
    ('format', 'other'), ('version', 'one'), ('version', 99), ('mode', 3), ('mode', 'nearest'),
    ('backbone', 5), ('backbone_local', ['x']), ('base_model', 7), ('fingerprint', {'a': 1}), ('layer', 1.5),
    ('num_features', '6'), ('num_features', 0), ('num_features', 7), ('grid_size', [3]), ('grid_size', '3x3'),
    ('grid_size', [3, 4]), ('input_size', [3, 32]), ('input_size', 'big'), ('input_size', [3, 0, 32]),
    ('interpolation', 5), ('interpolation', 'magic'), ('mean', [0.5, 0.5]), ('mean', 'grey'),
    ('mean', [0.5, 'x', 0.5]), ('std', [0.5, 0, 0.5]), ('std', None), ('crop_pct', 'most'), ('crop_pct', -1),
    ('crop_pct', None), ('crop_mode', 3), ('crop_mode', 'random'), ('num_bins', 2.5), ('num_bins', -1),
    ('num_bins', 100000), ('num_bins', 2), ('centre_radius', 'x'), ('centre_radius', -1), ('k', 0), ('k', True),
    ('dtype', 'int8'), ('dtype', 32), ('class_names', 'abc'), ('class_names', ['a', 'a', 'b']),
    ('class_names', ['a', 2, 'c']), ('class_names', ['a', 'b']), ('num_images', 'six'), ('num_images', 5),
    ('num_vectors', 'x'), ('num_vectors', 3), ('dataset', 5), ('metrics', 'good'), ('metrics', {'acc': 'high'}),
    ('complete', 'false'), ('build_progress', 'half'), ('safetensors_sha256', 5), ('safetensors_sha256', 'md5:x'),
    ('safetensors_size', '10'), ('safetensors_size', -1),
]


@pytest.mark.parametrize('field, value', BAD_FIELDS)
def test_a_wrong_field_of_memory_json_is_a_one_line_error_naming_it(tmp_path, field, value):
    folder = make(0).save_pretrained(tmp_path / 'm')
    meta = json.loads((folder / MEMORY_CONFIG).read_text())
    meta[field] = value
    (folder / MEMORY_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ValueError) as e:
        AnglePrototypeMemory.from_pretrained(folder)
    message = str(e.value)
    assert f'"{field}"' in message and '\n' not in message, message


@pytest.mark.parametrize('field', ['input_size', 'interpolation', 'mean', 'std', 'crop_pct'])
def test_a_memory_missing_part_of_its_data_config_is_refused_not_run_on_defaults(tmp_path, field):
    folder = make(0).save_pretrained(tmp_path / 'm')
    meta = json.loads((folder / MEMORY_CONFIG).read_text())
    del meta[field]
    (folder / MEMORY_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f'"{field}"'):
        AnglePrototypeMemory.from_pretrained(folder)


def test_a_memory_of_raw_features_has_no_data_config_and_says_so_when_given_images(tmp_path):
    memory = AnglePrototypeMemory(list('ab'))
    memory.add_features(torch.rand(2, 4, 3, 3), [0, 1])
    loaded = AnglePrototypeMemory.from_pretrained(memory.save_pretrained(tmp_path / 'm'))
    assert loaded.data_config is None
    with pytest.raises(ValueError, match='no data config'):
        loaded.create_transform()


# --- every tensor of memory.safetensors is checked -----------------------------------------------

def _rewrite(folder, change):
    """Change the tensors of a saved memory and record the new file's checksum, as a tamperer would."""
    from safetensors.torch import load_file, save_file

    from timm_u1.files import file_sha256

    path = folder / MEMORY_WEIGHTS
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={'format': 'timm_u1.memory'})
    meta = json.loads((folder / MEMORY_CONFIG).read_text())
    meta.update(safetensors_sha256='sha256:' + file_sha256(path), safetensors_size=path.stat().st_size)
    (folder / MEMORY_CONFIG).write_text(json.dumps(meta))


@pytest.mark.parametrize('tensor, change', [
    ('prototypes', lambda t: t['prototypes'].fill_(float('nan'))),
    ('prototype_norms', lambda t: t['prototype_norms'].fill_(float('inf'))),
    ('prototype_norms', lambda t: t['prototype_norms'].fill_(-1)),
    ('counts', lambda t: t['counts'].fill_(-3)),
    ('pooled', lambda t: t['pooled'].fill_(float('nan'))),
    ('pooled_labels', lambda t: t['pooled_labels'].fill_(7)),
    ('vectors', lambda t: t['vectors'].fill_(float('nan'))),
    ('vector_labels', lambda t: t['vector_labels'].fill_(-1)),
    ('pooled', lambda t: t.update(pooled=t['pooled'][:2])),
    ('prototypes', lambda t: t.update(prototypes=t['prototypes'].double())),
    ('counts', lambda t: t.update(counts=t['counts'].float())),
    ('vectors', lambda t: t.pop('vectors')),
])
def test_a_wrong_tensor_is_a_one_line_error_naming_it(tmp_path, tensor, change):
    folder = make(0).save_pretrained(tmp_path / 'm')
    _rewrite(folder, change)
    with pytest.raises(ValueError) as e:
        AnglePrototypeMemory.from_pretrained(folder)
    assert repr(tensor) in str(e.value) and '\n' not in str(e.value), str(e.value)
