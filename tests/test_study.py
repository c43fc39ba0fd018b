"""timm_u1.studies.scratch (timm-u1 compare): the from-scratch CE vs CE + U(1) study with a validation protocol."""
import argparse
import json
import re
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


STUDY = dict(seeds=GRID['seeds'], hue_weights=GRID['hue_weights'], lrs=GRID['lrs'],
             selection_seeds=GRID['selection_seeds'], val_fraction=0.3)


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
        result = study.run_study(_base(tiny_dataset, output), **STUDY, command='test')
    finally:
        mp.undo()
    return output, result, opened


def _task(output):
    saved = json.loads((output / 'study.json').read_text())
    (name, task), = saved['tasks'].items()
    return saved, task


def test_miniature_writes_study_table_and_plots(miniature, tiny_dataset):
    output, result, _ = miniature
    saved, task = _task(output)
    assert list(saved['tasks']) == [str(tiny_dataset)] and saved['tasks'] == result['tasks']
    assert (task['num_train'], task['num_val'], task['num_test']) == (28, 12, 16)
    assert [len(task['selection'][a]['grid']) for a in study.ARMS] == [2, 2, 0]
    for arm in ('ce', 'u1_logits'):
        chosen = task['selection'][arm]['chosen']
        best = max(r['val_top1'] for r in task['selection'][arm]['grid'])
        assert [r['val_top1'] for r in task['selection'][arm]['grid']
                if (r['param'], r['lr']) == (chosen['param'], chosen['lr'])] == [best]
    # the permuted arm runs at the natural arm's choice: their contrast is at the same lambda and lr
    assert task['selection']['u1_perm']['chosen'] == task['selection']['u1_logits']['chosen']
    assert task['selection']['u1_perm']['inherited_from'] == 'u1_logits'
    for arm in study.ARMS:
        test = task['test'][arm]
        assert (test['param'], test['lr']) == tuple(task['selection'][arm]['chosen'].values())
        assert len(test['top1']) == len(test['correct']) == len(test['eval_top1_per_epoch']) == 2
        assert all(len(c) == 16 and set(c) <= {'0', '1'} for c in test['correct'])
    assert task['selection']['u1_logits']['chosen']['param'] == 0.3
    table = (output / 'table.md').read_text()
    assert '| CE + λ U(1), logits | 0.3, ' in table and 'reference' in table
    assert '| natural minus permuted class order | same as CE + λ U(1), logits |' in table
    assert 'Holm over the family of all 3 comparisons of this study' in table
    assert re.search(r'\*\*Verdicts of the 3 comparisons: \d better, \d worse, \d equivalent, \d inconclusive\.\*\*', table)
    assert 'Caution: 2 test seeds' in table  # a miniature says so
    for png in ('paired_differences.png', 'curves.png'):
        assert (output / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not (output / 'permuted').exists() or not any((output / 'permuted').iterdir())  # relabelled copies go


def test_the_permuted_arm_trains_on_relabelled_splits(miniature):
    """Class order[j] is label j: the trainer's angle 2 pi j / C goes to class order[j]."""
    from datasets import load_from_disk

    from timm_u1.studies.arms import class_order

    output = miniature[0]
    relabelled = load_from_disk(str(study.permuted_splits(output / 'splits', output / 'permuted_check', 1)))
    original = load_from_disk(str(output / 'splits'))
    order = class_order(1, 4).tolist()
    for split in ('train', 'validation', 'test'):
        names = relabelled[split].features['label'].names
        assert names == [original[split].features['label'].names[c] for c in order]
        assert [order[j] for j in relabelled[split]['label']] == original[split]['label']
    assert order != [0, 1, 2, 3]


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
    again = study.run_study(_base(tiny_dataset, output), **STUDY)
    assert trained == []
    assert again['tasks'] == result['tasks']


def test_a_resumed_study_continues_an_interrupted_run(miniature, tiny_dataset, monkeypatch):
    """A run neither in the results nor finished in its folder is trained again with resume=True (it
    continues from its checkpoint)."""
    output = miniature[0]
    _, task = _task(output)
    lr = task['test']['ce']['lr']
    run = output / 'test' / 'ce' / f'lr{lr:g}' / 'seed1'
    summary = (run / 'summary.json').read_text()
    (run / 'summary.json').unlink()
    results = output / 'results' / 'rank0.jsonl'
    lines = results.read_text().splitlines()
    kept = [line for line in lines if not (json.loads(line)['phase'] == 'test' and json.loads(line)['arm'] == 'ce'
                                           and json.loads(line)['seed'] == 1)]
    results.write_text(''.join(line + '\n' for line in kept))
    configs = []

    def fake_train(config):
        configs.append(config)
        (run / 'summary.json').write_text(summary)
        return json.loads(summary)

    monkeypatch.setattr(study, 'train', fake_train)
    study.run_study(_base(tiny_dataset, output), **STUDY)
    assert [c.output for c in configs] == [run] and configs[0].resume and configs[0].eval_split == 'test'
    assert len(results.read_text().splitlines()) == len(lines)  # recorded again


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
        study.run_study(dataclasses.replace(_base(tiny_dataset, output), **change), **STUDY)
    assert (output / 'study.json').read_text() == before  # nothing rewritten


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
    summaries = list((output / 'test').glob('*/lr*/seed*/summary.json'))
    assert len(summaries) == 6
    for summary in summaries:
        s = json.loads(summary.read_text())
        assert 100 * s['final_correct'].count('1') / len(s['final_correct']) == pytest.approx(s['final']['eval_top1'])
    # a run resumed after its last epoch (summary lost) writes the same string again
    run = next((output / 'test' / 'ce').glob('lr*/seed0'))
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


# --- options are checked when parsed, with their range (issue 20, items 4 and 12) -------------------

@pytest.mark.parametrize('command, option, value', [
    ('compare', '--margin', 'nan'), ('compare', '--margin', '-1'), ('compare', '--margin', '0'),
    ('compare', '--bootstrap', '0'), ('compare', '--bootstrap', '-1'),
    ('compare', '--lrs', '0'), ('compare', '--lrs', 'inf'), ('compare', '--hue-weights', '-1'),
    ('compare', '--val-fraction', '1'), ('compare', '--val-fraction', '0'), ('compare', '--seeds', '-1'),
    ('compare', '--selection-seeds', '1e30'), ('compare', '--epochs', '0'), ('compare', '--img-size', '0'),
    ('compare', '--batch-size', '0'), ('compare', '--model', ''), ('compare', '--data', ' '),
    ('finetune', '--margin', 'nan'), ('finetune', '--steps', '0'), ('finetune', '--steps', '-1'),
    ('finetune', '--bootstrap', '0'), ('finetune', '--bootstrap', '-1'), ('finetune', '--block-lr-scale', '0'),
    ('finetune', '--smoothings', '1'), ('finetune', '--hue-weights', 'nan'), ('finetune', '--lrs', '-3'),
    ('finetune', '--tasks', 'digits:0'), ('finetune', '--tasks', 'digits'), ('finetune', '--batch-size', '0'),
    ('finetune', '--img-size', '-8'), ('finetune', '--model', ''), ('finetune', '--seeds', '-2'),
    ('compare', '--jobs', '0'), ('finetune', '--jobs', '-1'), ('compare', '--output', ''), ('finetune', '--output', ' '),
])
def test_out_of_range_options_are_refused_when_parsed(command, option, value, tmp_path, monkeypatch, capsys):
    from timm_u1.cli import compare, finetune

    monkeypatch.setattr(compare, 'run_study', lambda *a, **k: pytest.fail('the study ran'))
    monkeypatch.setattr(finetune, 'run_finetune_study', lambda *a, **k: pytest.fail('the study ran'))
    with pytest.raises(SystemExit) as exit_info:
        main([command, '--output', str(tmp_path / 'o'), option, value] if option != '--output' else [command, option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f'argument {option}:' in err and 'must' in err
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('extra', [['--outp', 'elsewhere'], ['--hue-w', '0.5'], ['--epo', '3']])
def test_abbreviations_after_the_separator_are_refused(extra, tmp_path, monkeypatch, capsys):
    """``-- --outp DIR`` would be --output (a per-run option) to a parser that matches prefixes."""
    from timm_u1.cli import compare

    monkeypatch.setattr(compare, 'run_study', lambda *a, **k: pytest.fail('the study ran'))
    with pytest.raises(SystemExit) as usage_error:
        main(['compare', '--output', str(tmp_path / 'o'), '--', *extra])
    err = capsys.readouterr().err
    assert usage_error.value.code == 2 and extra[0] in err and 'timm-u1 compare: error: after --:' in err
    assert not (tmp_path / 'o').exists() and not (tmp_path / 'elsewhere').exists()


def test_a_study_folder_in_use_is_refused_before_any_training(tiny_dataset, tmp_path, monkeypatch):
    """Two compare commands on one --output would train into the same run folders."""
    import subprocess
    import sys

    from timm_u1.errors import RunLockedError

    output = tmp_path / 'study'
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; from timm_u1.runs import RunFolder; '
                               'f = RunFolder(sys.argv[1]).acquire(); print("held", flush=True); time.sleep(60)',
         str(output)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        monkeypatch.setattr(study, 'train', lambda config: pytest.fail('trained'))
        with pytest.raises(RunLockedError):
            study.run_study(_base(tiny_dataset, output), GRID['seeds'], GRID['hue_weights'], lrs=GRID['lrs'],
                            selection_seeds=GRID['selection_seeds'], val_fraction=0.3)
    finally:
        holder.kill()
        holder.wait()


# --- the same study.json from 2 worker processes, and from 2 processes of accelerate launch (issue 25) ---

def _same_study(a: Path, b: Path) -> None:
    """Two study.json equal in everything but when, where and by which command they ran."""
    a, b = json.loads(a.read_text()), json.loads(b.read_text())
    for d in (a, b):
        d.pop('seconds'), d.pop('execution'), d['settings'].pop('command')
    assert a == b


def test_two_jobs_write_the_study_of_one(miniature, tiny_dataset, tmp_path):
    two = study.run_study(_base(tiny_dataset, tmp_path / 'two'), **STUDY, command='test', jobs=2)
    assert two['execution'] == {'jobs': 2, 'processes': 1}
    _same_study(miniature[0] / 'study.json', tmp_path / 'two' / 'study.json')
    assert (tmp_path / 'two' / 'table.md').read_text() == (miniature[0] / 'table.md').read_text()


def test_two_launched_processes_write_the_study_of_one(miniature, tiny_dataset, tmp_path):
    """ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m timm_u1.cli compare ..."""
    import os
    import subprocess
    import sys

    import timm_u1

    out = tmp_path / 'launched'
    env = dict(os.environ, ACCELERATE_USE_CPU='1', PYTHONPATH=str(Path(timm_u1.__file__).parents[1]),
               OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'timm_u1.cli',
           'compare', '--data', str(tiny_dataset), '--model', 'test_resnet', '--img-size', '16', '--epochs', '1',
           '--batch-size', '8', '--lrs', '0.001', '0.004', '--hue-weights', '0.3', '--selection-seeds', '100', '101',
           '--seeds', '0', '1', '--val-fraction', '0.3', '--output', str(out),
           '--', '--scale', '0.7', '1.0', '--hflip', '0', '--color-jitter', '0', '--no-progress']
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('| natural minus permuted class order |') == 1  # one process reports
    assert json.loads((out / 'study.json').read_text())['execution'] == {'jobs': 1, 'processes': 2}
    assert sorted(p.name for p in (out / 'results').glob('rank*.jsonl')) == ['rank0.jsonl', 'rank1.jsonl']
    _same_study(miniature[0] / 'study.json', out / 'study.json')


# --- the scripts of docs/results.md and docs/benchmarks.md, at their smallest settings -------------------

def _script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / 'scripts' / name
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_doc_check_finds_tables_that_differ_from_their_study(miniature, tmp_path, capsys):
    check = _script('check_results_doc.py')
    output = miniature[0]
    table = (output / 'table.md').read_text()
    doc = tmp_path / 'results.md'
    doc.write_text(f'# Results\n\nprose\n\n<!-- table.md of runs/{output.name} -->\n{table}\n<!-- end of table.md -->\n')
    assert check.main(['--runs', str(output.parent), '--doc', str(doc)]) == 0
    assert '1 of 1 tables' in capsys.readouterr().out
    first_number = re.search(r'\d+\.\d\d', table.split('| CE |')[1]).group()
    doc.write_text(doc.read_text().replace(first_number, '99.99', 1))  # one number of the page changed
    assert check.main(['--runs', str(output.parent), '--doc', str(doc)]) == 1
    assert f"{output.name}: the page's table differs" in capsys.readouterr().err
    assert check.main(['--runs', str(output.parent), '--doc', str(doc), '--write']) == 0  # the page regenerated
    assert f'\n{table.strip()}\n' in doc.read_text() and doc.read_text().startswith('# Results\n\nprose')
    assert check.main(['--runs', str(output.parent), '--doc', str(doc)]) == 0
    doc.write_text(doc.read_text().replace(f'runs/{output.name}', 'runs/missing'))
    assert check.main(['--runs', str(output.parent), '--doc', str(doc)]) == 1
    # an empty block, as a page has before its study ran, is filled by --write
    doc.write_text(f'<!-- table.md of runs/{output.name} -->\n<!-- end of table.md -->\nafter\n')
    assert check.main(['--runs', str(output.parent), '--doc', str(doc)]) == 1
    assert check.main(['--runs', str(output.parent), '--doc', str(doc), '--write']) == 0
    assert doc.read_text() == f'<!-- table.md of runs/{output.name} -->\n{table.strip()}\n<!-- end of table.md -->\nafter\n'


def test_the_study_benchmark_runs_and_checks_the_study_json_of_each_job_count():
    import os
    import subprocess
    import sys

    import timm_u1

    script = Path(__file__).resolve().parents[1] / 'scripts' / 'bench_studies.py'
    env = dict(os.environ, PYTHONPATH=str(Path(timm_u1.__file__).parents[1]))
    done = subprocess.run([sys.executable, str(script), '--study', 'finetune', '--tasks', 'digits:3', '--seeds', '2',
                           '--steps', '2', '--repeats', '1'], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'study.json identical in every run' in done.stdout
    ratios = re.findall(r'^\s+(\d+)\s+[\d.]+\s+([\d.]+)x\s+([\d.]+)x$', done.stdout, re.M)
    assert [row[0] for row in ratios] == ['1', '2'] and float(ratios[0][1]) == float(ratios[0][2]) == 1.0


# --- every field of the study's artefacts is checked when loaded ---------------------------------------

def test_the_results_ledger_checks_every_line_and_tolerates_a_torn_last_one(tmp_path):
    from timm_u1.studies.ledger import Ledger, Run

    ledger = Ledger(tmp_path, {'model': 'm'})
    ledger.check_identity()
    run = Run('digits', 'test', 'ce', 0.0, 1e-3, 0)
    ledger.append(run, {'top1': 50.0, 'correct': '10'})
    ledger.append(Run('digits', 'test', 'ce', 0.0, 1e-3, 1), {'top1': 100.0, 'correct': '11'}, writer=1)
    path = tmp_path / 'results' / 'rank0.jsonl'
    with open(path, 'a') as f:
        f.write('{"task": "digits", "pha')  # killed while appending
    assert ledger.read() == {run: {'top1': 50.0, 'correct': '10'},
                             Run('digits', 'test', 'ce', 0.0, 1e-3, 1): {'top1': 100.0, 'correct': '11'}}
    good = path.read_text().splitlines()[0]
    for change, field in ((('"top1": 50.0', '"top1": 75.0'), 'result.top1'), (('"seed": 0', '"seed": -1'), 'seed'),
                          (('"phase": "test"', '"phase": "final"'), 'phase'), (('"10"', '"1x"'), 'result.correct'),
                          (('"lr": 0.001', '"lr": "fast"'), 'lr')):
        path.write_text(good.replace(*change) + '\n' + good + '\n')
        with pytest.raises(ValueError, match=f"rank0.jsonl:1: field '{re.escape(field)}'"):
            ledger.read()
    with pytest.raises(Exception, match='model'):
        Ledger(tmp_path, {'model': 'other'}).check_identity()


@pytest.mark.parametrize('path, value, field', [
    (('settings', 'margin'), float('nan'), 'settings.margin'),
    (('settings', 'seeds'), [0], 'settings.seeds'),
    (('settings', 'model'), None, 'settings.model'),
    (('tasks',), {}, 'tasks'),
    (('test', 'ce', 'top1'), [50.0], '.test.ce.top1'),
    (('test', 'u1_logits', 'correct'), ['01', '10'], '.test.u1_logits.correct'),
    (('num_test',), 'many', '.num_test'),
    (('selection', 'u1_perm', 'chosen'), None, '.selection.u1_perm.chosen'),
])
def test_a_bad_study_json_field_is_named_in_one_line(miniature, tmp_path, capsys, path, value, field):
    import shutil

    folder = tmp_path / 'copy'
    shutil.copytree(miniature[0], folder, ignore=shutil.ignore_patterns('selection', 'test', 'splits'))
    saved = json.loads((folder / 'study.json').read_text())
    (task,) = saved['tasks'].values()
    target = saved if path[0] in ('settings', 'tasks') else task
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (folder / 'study.json').write_text(json.dumps(saved))
    assert main(['compare', '--output', str(folder), '--report']) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err and 'study.json' in err
