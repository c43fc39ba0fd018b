"""Install timm_u1 with every direct dependency at its declared floor and run the test suite.

    python3 scripts/check_floors.py                      # the floors of pyproject.toml, torch included
    python3 scripts/check_floors.py --keep               # keep the venv (for bisecting one package)
    python3 scripts/check_floors.py -- -x tests/test_hub.py    # arguments after -- go to pytest

Lowest-direct resolution with pip: every requirement of ``[project].dependencies`` and of the extras
installed (``dev`` and ``faiss`` by default, ``timm_u1[...]`` self-references expanded) must carry a
floor (``>=X``) or a pin (``==X``); each becomes ``name==X`` in a constraints file, so pip installs the
direct dependencies at exactly their floors and resolves the indirect ones as a user's pip would
(highest compatible). The script checks that each installed version is the floor, prints the table
and ``pip freeze``, runs ``python -m pytest -q`` in the fresh venv and exits with pytest's code
(exit 5, no tests collected, becomes 1).

torch and torchvision are installed first, by default at their floors. On an x86_64 machine PyPI has
only CUDA builds (several GB per torch); ``--torch V --torchvision W`` (or TIMM_U1_FLOORS_TORCH and
TIMM_U1_FLOORS_TORCHVISION) installs another pair, and the run then says loudly that the torch
floor was not the one checked. pip takes a torch that lies on the machine's disk (its find-links)
without downloading it; which ones do is the machine's business, not this script's.

The venv is made with ``--python`` (default: this interpreter; it needs Python >= 3.11 for tomllib)
at ``--venv`` (default: a new folder under the system temp dir) and removed at the end unless
``--keep``. Meant as a separate CI job (``TIMM_U1_CHECK_FLOORS=1 bash .ci/run``): a fresh venv is
~6 GB and the suite is run a second time. docs/install.md gives the last result.
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


def canonical(name: str) -> str:
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
            raise SystemExit(f'pyproject.toml has no extra {extra!r}')
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
            raise SystemExit(f'{name} has two floors: {found[name]} and {floor}')
        found[name] = floor
    if bad:
        raise SystemExit('every direct dependency needs a floor (>=) or a pin (==); these have none: '
                         + ', '.join(bad))
    return found


def same_version(a: str, b: str) -> bool:
    """``2.1`` and ``2.1.0`` are one version (as ``==2.1`` matches ``2.1.0``)."""
    def norm(v: str) -> str:
        while v.endswith('.0'):
            v = v[:-2]
        return v
    return norm(a) == norm(b)


def run(cmd: list[str], **kwargs) -> None:
    print('+', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if '--' in argv:
        i = argv.index('--')
        argv, pytest_args = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--venv', type=Path, help='where to make the venv (default: a new temp folder); must not exist')
    p.add_argument('--python', default=sys.executable, help='the interpreter the venv is made from')
    p.add_argument('--extras', default='dev,faiss', help='extras to install beside the core (default: dev,faiss)')
    p.add_argument('--torch', default=os.environ.get('TIMM_U1_FLOORS_TORCH'),
                   help="torch version to install instead of pyproject's floor (also TIMM_U1_FLOORS_TORCH)")
    p.add_argument('--torchvision', default=os.environ.get('TIMM_U1_FLOORS_TORCHVISION'),
                   help="torchvision version instead of the floor (also TIMM_U1_FLOORS_TORCHVISION)")
    p.add_argument('--keep', action='store_true', help='keep the venv afterwards')
    p.add_argument('--reuse', action='store_true',
                   help='install into the existing --venv (kept) instead of a fresh one: for bisecting a floor')
    p.add_argument('--no-tests', action='store_true', help='install and print the versions only')
    args = p.parse_args(argv)

    pyproject = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    extras = [e.strip() for e in args.extras.split(',') if e.strip()]
    wanted = floors(direct_requirements(pyproject, extras))
    torch_note = []
    for name, override in (('torch', args.torch), ('torchvision', args.torchvision)):
        if override and name in wanted and override != wanted[name]:
            torch_note.append(f'{name} {override} instead of its floor {wanted[name]}')
            wanted[name] = override
        elif override and name not in wanted:
            raise SystemExit(f'{name} is not a direct dependency')

    if args.reuse and not (args.venv and (args.venv / 'bin' / 'python').exists()):
        raise SystemExit('--reuse needs --venv naming an existing venv')
    args.keep = args.keep or args.reuse
    venv = args.venv or Path(tempfile.mkdtemp(prefix='timm_u1_floors_')) / 'venv'
    if venv.exists() and not args.reuse:
        raise SystemExit(f'{venv} exists: the floors are checked in a fresh venv')
    work = venv.parent
    constraints = work / 'floors-constraints.txt'
    work.mkdir(parents=True, exist_ok=True)
    constraints.write_text(''.join(f'{n}=={v}\n' for n, v in sorted(wanted.items())))
    print(f'floors ({len(wanted)} direct dependencies, extras {",".join(extras)}) -> {constraints}', flush=True)
    if torch_note:
        print('NOTE: ' + '; '.join(torch_note) + ': the torch floor is NOT the one checked', flush=True)

    t0 = time.monotonic()
    rc = 1
    try:
        py = str(venv / 'bin' / 'python')
        pip = [py, '-m', 'pip', '--disable-pip-version-check']
        if not args.reuse:
            run([args.python, '-m', 'venv', str(venv)])
            run(pip + ['install', '-q', '--upgrade', 'pip'])
        # torch first, at the chosen versions, so that nothing below pulls another one
        torch_reqs = [f'{n}=={wanted[n]}' for n in ('torch', 'torchvision') if n in wanted]
        if torch_reqs:
            run(pip + ['install', '-q', '-c', str(constraints)] + torch_reqs)
        run(pip + ['install', '-q', '-c', str(constraints), '-e', f'.[{",".join(extras)}]'], cwd=ROOT)
        installed_t = time.monotonic() - t0

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
        print(f'== python {subprocess.run([py, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True).stdout.strip()}'
              f', install took {installed_t:.0f} s', flush=True)
        if wrong:
            print('FAILED: not installed at the floor: ' + ', '.join(wrong), file=sys.stderr)
            return 1
        if args.no_tests:
            return 0
        t1 = time.monotonic()
        r = subprocess.run([py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider'] + pytest_args, cwd=ROOT)
        rc = 1 if r.returncode == 5 else r.returncode
        print(f'\n== floors run: pytest exit {r.returncode}, suite {time.monotonic() - t1:.0f} s, '
              f'total {time.monotonic() - t0:.0f} s' + (' (' + '; '.join(torch_note) + ')' if torch_note else ''),
              flush=True)
        return rc
    except subprocess.CalledProcessError as e:
        print(f'FAILED: {" ".join(map(str, e.cmd))} exited {e.returncode} (a floor that pip cannot install '
              'beside the others: raise it to what the others need)', file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f'venv kept at {venv}', flush=True)
        else:
            shutil.rmtree(work if args.venv is None else venv, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
