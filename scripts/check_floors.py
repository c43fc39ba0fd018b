"""Install timm_u1 with every direct dependency at its declared floor and run the test suite.

    python3 scripts/check_floors.py                      # the floors of pyproject.toml, torch included
    python3 scripts/check_floors.py --constraints-only   # print the constraints, make no venv (seconds)
    python3 scripts/check_floors.py --keep               # keep the venv (for bisecting one package)
    python3 scripts/check_floors.py --venv V --reuse     # install into kept venv V again (bisecting)
    python3 scripts/check_floors.py -- -x tests/test_hub.py    # arguments after -- go to pytest

Lowest-direct resolution with pip: every requirement of ``[project].dependencies`` and of the extras
installed (``dev`` and ``faiss`` by default, ``timm_u1[...]`` self-references expanded) must carry a
floor (``>=X``) or a pin (``==X``); each becomes ``name==X`` in a constraints file, so pip installs the
direct dependencies at exactly their floors and resolves the indirect ones as a user's pip would
(highest compatible). The script checks that each installed version is the floor, prints the table
and ``pip freeze``, runs ``python -m pytest -q`` in that venv and exits with pytest's code (exit 5,
no tests collected, becomes 1). docs/install.md gives the last result.

torch and torchvision are installed first. On x86_64 PyPI has only CUDA builds (~2.7 GB of wheels);
``--torch V --torchvision W`` installs another pair, and the run then says loudly that the torch floor
was not the one checked.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_REQ = re.compile(r'^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*(.*?)\s*(?:;.*)?$')
_SPEC = re.compile(r'^(==|>=|<=|<|>|!=|~=)\s*([^\s,]+)$')
_VERSION = re.compile(r'^\d+(\.\d+)*([a-z]+\d*)?(\.post\d+)?$')


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r'[-_.]+', '-', name).lower()


def direct_requirements(pyproject: dict, extras: list[str]) -> list[str]:
    """The requirement strings of the core dependencies and of ``extras``, self-references expanded."""
    project = pyproject['project']
    own = canonical(project['name'])
    optional = project.get('optional-dependencies', {})
    out: list[str] = list(project.get('dependencies', []))
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f'pyproject.toml has no extra {extra!r}: name one of {", ".join(sorted(optional))}')
        seen.add(extra)
        for req in optional[extra]:
            m = _REQ.match(req)
            if m and canonical(m.group(1)) == own:
                todo.extend(e.strip() for e in (m.group(2) or '').split(',') if e.strip())
            else:
                out.append(req)
    return out


def floors(requirements: list[str]) -> dict[str, str]:
    """``{name: floor}``: the version after ``>=`` or ``==``; a requirement with neither is an error."""
    found: dict[str, str] = {}
    bad = []
    for req in requirements:
        m = _REQ.match(req)
        if not m:
            bad.append(req)
            continue
        name, spec = canonical(m.group(1)), m.group(3)
        floor = None
        for part in filter(None, (p.strip() for p in spec.split(','))):
            s = _SPEC.match(part)
            if s and s.group(1) in ('>=', '=='):
                floor = s.group(2)
        if floor is None:
            bad.append(req)
            continue
        if name in found and found[name] != floor:
            raise SystemExit(f'{name} has two floors, {found[name]} and {floor}: declare one')
        found[name] = floor
    if bad:
        raise SystemExit('every direct dependency needs a floor (>=) or a pin (==); these have none: '
                         + ', '.join(bad))
    return found


def constraints(pyproject: dict, extras: list[str], overrides: dict[str, str | None]) -> tuple[dict[str, str], list[str]]:
    """The versions to install (floors, with ``overrides`` for torch/torchvision) and a note per override."""
    wanted = floors(direct_requirements(pyproject, extras))
    notes = []
    for name, version in overrides.items():
        if not version:
            continue
        if name not in wanted:
            raise SystemExit(f'{name} is not a direct dependency: drop --{name}')
        if not same_version(version, wanted[name]):
            notes.append(f'{name} {version} instead of its floor {wanted[name]}')
            wanted[name] = version
    return wanted, notes


def same_version(a: str, b: str) -> bool:
    """``2.1`` and ``2.1.0`` are one version (as ``==2.1`` matches ``2.1.0``)."""
    def norm(v: str) -> str:
        while v.endswith('.0'):
            v = v[:-2]
        return v
    return norm(a) == norm(b)


def version(text: str) -> str:
    """An argparse type: a release number such as ``2.3`` or ``2.3.1``."""
    if not _VERSION.match(text):
        raise argparse.ArgumentTypeError(f'must be a release number such as 2.3.1, got {text!r}')
    return text


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The script's options and the arguments after ``--`` (for pytest)."""
    pytest_args: list[str] = []
    if '--' in argv:
        i = argv.index('--')
        argv, pytest_args = argv[:i], argv[i + 1:]
    # argparse, not timm_u1.cli.options: this script runs before (and outside) any venv that has
    # timm_u1 and torch, and importing timm_u1 imports torch
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--venv', type=Path, help='where to make the venv (default: a new temp folder); must not exist')
    p.add_argument('--python', default=sys.executable, help='the interpreter the venv is made from')
    p.add_argument('--extras', default='dev,faiss', help='extras to install beside the core (default: dev,faiss)')
    p.add_argument('--torch', type=version, default=os.environ.get('TIMM_U1_FLOORS_TORCH'),
                   help="torch version to install instead of pyproject's floor (also TIMM_U1_FLOORS_TORCH)")
    p.add_argument('--torchvision', type=version, default=os.environ.get('TIMM_U1_FLOORS_TORCHVISION'),
                   help="torchvision version instead of the floor (also TIMM_U1_FLOORS_TORCHVISION)")
    p.add_argument('--keep', action='store_true', help='keep the venv afterwards')
    p.add_argument('--reuse', action='store_true',
                   help='install into the existing --venv (kept) instead of a fresh one: for bisecting a floor')
    p.add_argument('--no-tests', action='store_true', help='install and print the versions only')
    p.add_argument('--constraints-only', action='store_true', help='print the constraints and stop (no venv)')
    args = p.parse_args(argv)
    if args.reuse and not (args.venv and (args.venv / 'bin' / 'python').exists()):
        p.error('--reuse needs --venv naming an existing venv')
    if args.venv and args.venv.exists() and not args.reuse:
        p.error(f'--venv {args.venv} exists: the floors are checked in a fresh venv (or add --reuse)')
    return args, pytest_args


def run(cmd: list[str], **kwargs) -> None:
    print('+', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def install_commands(pip: list[str], constraints_file: Path, wanted: dict[str, str], requirements: list[str],
                     extras: list[str], torch_overridden: bool) -> list[list[str]]:
    """The pip commands that install torch, then timm_u1 with ``extras`` (run from the repository root).

    With a torch pair other than the floors (``--torch``), installing the project itself would bring
    back its own ``torch>=FLOOR`` and pip would refuse the pair (or replace it): its requirements are
    then installed one by one, torch's pair left out, and the project with ``--no-deps``.
    """
    c = ['-c', str(constraints_file)]
    # torch first, at the chosen versions, so that nothing below pulls another one
    torch_reqs = [f'{n}=={wanted[n]}' for n in ('torch', 'torchvision') if n in wanted]
    commands = [pip + ['install', '-q', *c, *torch_reqs]] if torch_reqs else []
    if not torch_overridden:
        return commands + [pip + ['install', '-q', *c, '-e', f'.[{",".join(extras)}]']]
    others = [r for r in requirements if canonical(_REQ.match(r).group(1)) not in ('torch', 'torchvision')]
    return commands + [pip + ['install', '-q', *c, *others], pip + ['install', '-q', '--no-deps', '-e', '.']]


def install(venv: Path, python: str, constraints_file: Path, wanted: dict[str, str], requirements: list[str],
            extras: list[str], fresh: bool, torch_overridden: bool) -> list[str]:
    """Make (if ``fresh``) the venv and install torch, then timm_u1 with ``extras``; pip's command."""
    pip = [str(venv / 'bin' / 'python'), '-m', 'pip', '--disable-pip-version-check']
    if fresh:
        run([python, '-m', 'venv', str(venv)])
        run(pip + ['install', '-q', '--upgrade', 'pip'])
    for command in install_commands(pip, constraints_file, wanted, requirements, extras, torch_overridden):
        run(command, cwd=ROOT)
    return pip


def report(pip: list[str], wanted: dict[str, str]) -> list[str]:
    """Print the floor/installed table and ``pip freeze``; the names not installed at their floor."""
    freeze = subprocess.run(pip + ['freeze', '--all'], capture_output=True, text=True, check=True).stdout
    have = {}
    for line in freeze.splitlines():
        if '==' in line:
            n, v = line.split('==', 1)
            have[canonical(n)] = v.strip()
    print('\n== direct dependencies: floor / installed')
    wrong = []
    for n, v in sorted(wanted.items()):
        got = have.get(n, 'MISSING')
        mark = '' if same_version(got, v) else '   <-- not the floor'
        wrong += [n] if mark else []
        print(f'  {n:34s} {v:12s} {got}{mark}')
    print('\n== pip freeze')
    print(freeze, end='')
    return wrong


def main(argv: list[str] | None = None) -> int:
    args, pytest_args = parse_args(list(sys.argv[1:] if argv is None else argv))
    pyproject = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    extras = [e.strip() for e in args.extras.split(',') if e.strip()]
    wanted, torch_note = constraints(pyproject, extras, {'torch': args.torch, 'torchvision': args.torchvision})
    lines = ''.join(f'{n}=={v}\n' for n, v in sorted(wanted.items()))
    if args.constraints_only:
        print(lines, end='')
        return 0

    keep = args.keep or args.reuse
    venv = args.venv or Path(tempfile.mkdtemp(prefix='timm_u1_floors_')) / 'venv'
    work = venv.parent
    work.mkdir(parents=True, exist_ok=True)
    constraints_file = work / 'floors-constraints.txt'
    constraints_file.write_text(lines)
    print(f'floors ({len(wanted)} direct dependencies, extras {",".join(extras)}) -> {constraints_file}', flush=True)
    if torch_note:
        print('NOTE: ' + '; '.join(torch_note) + ': the torch floor is NOT the one checked', flush=True)

    t0 = time.monotonic()
    try:
        pip = install(venv, args.python, constraints_file, wanted, direct_requirements(pyproject, extras), extras,
                      fresh=not args.reuse, torch_overridden=bool(torch_note))
        installed_t = time.monotonic() - t0
        wrong = report(pip, wanted)
        py = str(venv / 'bin' / 'python')
        py_version = subprocess.run([py, '-c', 'import sys; print(sys.version.split()[0])'],
                                    capture_output=True, text=True).stdout.strip()
        print(f'== python {py_version}, install took {installed_t:.0f} s', flush=True)
        if wrong:
            print('FAILED: not installed at the floor: ' + ', '.join(wrong), file=sys.stderr)
            return 1
        if args.no_tests:
            return 0
        t1 = time.monotonic()
        r = subprocess.run([py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider'] + pytest_args, cwd=ROOT)
        print(f'\n== floors run: pytest exit {r.returncode}, suite {time.monotonic() - t1:.0f} s, '
              f'total {time.monotonic() - t0:.0f} s' + (' (' + '; '.join(torch_note) + ')' if torch_note else ''),
              flush=True)
        return 1 if r.returncode == 5 else r.returncode
    except subprocess.CalledProcessError as e:
        print(f'FAILED: {" ".join(map(str, e.cmd))} exited {e.returncode} (a floor that pip cannot install '
              'beside the others: raise it to what the others need)', file=sys.stderr)
        return 1
    finally:
        if keep:
            print(f'venv kept at {venv}', flush=True)
        else:
            shutil.rmtree(work if args.venv is None else venv, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
