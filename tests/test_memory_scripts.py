"""docs/memory.md's commands and scripts run at their smallest settings, and the page's table has the
form the command prints (the full run's check: ``python scripts/memory_baselines.py --docs docs/memory.md``)."""
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

import timm_u1

ROOT = Path(timm_u1.__file__).resolve().parents[1]
PAGE = ROOT / 'docs' / 'memory.md'


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'scripts' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_shape(table: str):
    """A markdown table with its numbers replaced by their format: what a smaller run shares with the page."""
    lines = table.strip().splitlines()
    header = re.sub(r'\(\d+ test images\)', '(N test images)', lines[0])
    rows = []
    for line in lines[2:]:
        label, whose, accuracy, p = [cell.strip() for cell in line.strip('|').split('|')]
        accuracy_form = re.sub(r'\d\.\d{4}', '0.0000', accuracy)
        p_form = re.sub(r'\d\.\de[-+]\d{2}', '0.0e-00', p)
        rows.append((label, whose, accuracy_form.strip('*'), p_form))
    return header, lines[1], sorted(rows)


@pytest.fixture(scope='module')
def small_baselines(tmp_path_factory):
    """``scripts/memory_baselines.py`` at its smallest setting (in this process): (stdout, result JSON)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp('baselines') / 'result.json'
    script, stdout = load_script('memory_baselines'), io.StringIO()
    argv = ['memory_baselines.py', '--limit', '40', '--img-size', '32', '--out', str(out)]
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setattr(sys, 'argv', argv)
        assert script.main() == 0
    return stdout.getvalue(), json.loads(out.read_text())


def test_the_baselines_script_prints_a_table_of_the_page_s_form(small_baselines):
    stdout, result = small_baselines
    printed = '\n'.join(line for line in stdout.splitlines() if line.startswith('|'))
    script = load_script('memory_baselines')
    page = script.page_table(PAGE.read_text(encoding='utf-8'))
    assert table_shape(printed)[0] == table_shape(page)[0]  # header
    assert table_shape(printed)[1] == table_shape(page)[1]
    printed_rows, page_rows = table_shape(printed)[2], table_shape(page)[2]
    # the same methods with the same words; one "(best)" in each
    assert [r[:2] for r in printed_rows] == [r[:2] for r in page_rows]
    assert sum(r[3] == '(best)' for r in printed_rows) == 1 == sum(r[3] == '(best)' for r in page_rows)
    assert {r[2] for r in printed_rows} == {'0.0000'} == {r[2] for r in page_rows}
    assert result['images'] == 40 and result['train_images'] == 40 and result['img_size'] == 32
    assert script.table(result) == printed  # what is printed is what the JSON holds


def test_the_baselines_script_checks_and_writes_the_page(small_baselines, tmp_path, monkeypatch, capsys):
    _, result = small_baselines
    script = load_script('memory_baselines')
    monkeypatch.setattr(script, 'run', lambda *a, **kw: result)
    page = tmp_path / 'memory.md'
    page.write_text(PAGE.read_text(encoding='utf-8'))
    monkeypatch.setattr(sys, 'argv', ['memory_baselines.py', '--docs', str(page)])
    assert script.main() == 1  # the page holds the full run's table, not this small one's
    monkeypatch.setattr(sys, 'argv', ['memory_baselines.py', '--docs', str(page), '--write'])
    assert script.main() == 0
    assert script.page_table(page.read_text()) == script.table(result)
    monkeypatch.setattr(sys, 'argv', ['memory_baselines.py', '--docs', str(page)])
    assert script.main() == 0
    assert 'holds this table' in capsys.readouterr().out


def test_the_page_s_commands_run_at_their_smallest_setting(tmp_path, capsys):
    """The two documented commands of the digits section, at 32 px instead of 96."""
    from timm_u1.cli import main

    commands = [line.strip() for line in PAGE.read_text(encoding='utf-8').splitlines()
                if line.startswith('timm-u1 memory ') and 'digits_lite0_96' in line]
    assert [c.split()[2] for c in commands] == ['build', 'eval']
    for command in commands:
        command = command.replace('--img-size 96', '--img-size 32').replace(
            'runs/memory/digits_lite0_96', str(tmp_path / 'memory')).replace('docs/memory_digits.png', str(tmp_path / 'plot.png'))
        assert main(shlex.split(command)[1:]) == 0, command
    out = capsys.readouterr().out
    assert all(f'| {m:<12} |' in out for m in ('prototype', 'instance', 'cl2n', 'pooled_knn'))
    assert (tmp_path / 'plot.png').read_bytes()[:4] == b'\x89PNG'


def test_the_page_s_python_example_runs(tmp_path, monkeypatch, hub):
    """The Python block of the page, on 120 digits of each split, at 32 px, pushing to the test Hub."""
    import timm_u1.data

    code = PAGE.read_text(encoding='utf-8').split('```python\n', 1)[1].split('```', 1)[0]
    assert 'img_size=96' in code and "'ORG/NAME'" in code
    code = code.replace('img_size=96', 'img_size=32').replace("'ORG/NAME'", "'tester/digits-memory'")
    load = timm_u1.data.load_image_dataset
    monkeypatch.setattr(timm_u1.data, 'load_image_dataset', lambda *a, **kw: load(*a, **kw).select(range(120)))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, str(PAGE), 'exec'), namespace)
    assert 'memory/memory.json' in hub.files('tester/digits-memory')
    assert namespace['memory'].num_images == 120


def test_the_search_benchmark_runs_at_its_smallest_setting(tmp_path, monkeypatch, capsys):
    script = load_script('bench_memory')
    monkeypatch.setattr(sys, 'argv', [
        'bench_memory.py', '--sizes', '500', '--dim', '8', '--queries', '10', '--k', '3', '--repeats', '1',
        '--in-process', '--plot', str(tmp_path / 'b.png')])
    assert script.main() == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith('|') and '500' in line]
    assert len(rows) >= 2 and all(re.search(r'\d+\.\d\dx', row) for row in rows)  # a ratio against sklearn in every row
    assert 'sklearn' in ''.join(rows)
    assert (tmp_path / 'b.png').read_bytes()[:4] == b'\x89PNG'
