""" Check that the tables of docs/results.md are what the studies' commands write.

    python scripts/check_results_doc.py --runs runs            # after the commands docs/results.md names
    python scripts/check_results_doc.py --runs /work/runs/studies --doc docs/results.md
    python scripts/check_results_doc.py --runs runs --write    # put the regenerated tables into the page

The page embeds each study's ``table.md`` between ``<!-- table.md of runs/NAME -->`` and
``<!-- end of table.md -->``. For each, the script regenerates ``RUNS/NAME/table.md`` from its
``study.json`` (the command's ``--report``) and compares it with the page's copy; it exits 1 and
names every study whose table differs or is missing. With ``--write`` it replaces each embedded
table by the regenerated one instead (and still fails for a study it cannot find).
"""
import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START, END = '<!-- table.md of runs/{} -->', '<!-- end of table.md -->'
BLOCK = re.compile(r'<!-- table\.md of runs/(?P<name>[^ ]+) -->\n(?P<table>.*?)<!-- end of table\.md -->', re.S)


def embedded_tables(doc: str) -> List[Tuple[str, str]]:
    """(study folder name, embedded table text) for every marked block of the page (an empty one too)."""
    return [(m['name'], m['table']) for m in BLOCK.finditer(doc)]


def with_tables(doc: str, tables: Dict[str, str]) -> str:
    """``doc`` with the block of each study in ``tables`` holding that table."""
    def fill(m: 're.Match') -> str:
        name = m['name']
        return f'{START.format(name)}\n{tables[name].strip()}\n{END}' if name in tables else m.group()
    return BLOCK.sub(fill, doc)


def regenerate(folder: Path) -> str:
    """The study's table.md, written again from its study.json by its own report."""
    from timm_u1.files import read_json
    from timm_u1.studies import frozen, scratch

    settings = read_json(folder / 'study.json').get('settings', {})
    report = frozen.write_report if 'train' in settings else scratch.write_report
    report(folder)
    return (folder / 'table.md').read_text(encoding='utf-8')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs', type=Path, required=True, help='the folder holding the study folders (runs/ in the docs)')
    p.add_argument('--doc', type=Path, default=ROOT / 'docs' / 'results.md')
    p.add_argument('--write', action='store_true', help='replace the embedded tables by the regenerated ones')
    args = p.parse_args(argv)
    doc = args.doc.read_text(encoding='utf-8')
    blocks = embedded_tables(doc)
    if not blocks:
        print(f'{args.doc} embeds no table.md block', file=sys.stderr)
        return 1
    failed, fresh = [], {}
    for name, table in blocks:
        folder = args.runs / name
        if not (folder / 'study.json').is_file():
            failed.append(f'{name}: no {folder / "study.json"} (run the command the page names)')
            continue
        fresh[name] = regenerate(folder)
        if not args.write and fresh[name].strip() != table.strip():
            failed.append(f'{name}: the page\'s table differs from {folder / "table.md"}')
    if args.write:
        from timm_u1.files import write_text

        write_text(args.doc, with_tables(doc, fresh))
    for line in failed:
        print(line, file=sys.stderr)
    done = 'were rewritten from' if args.write else 'match'
    print(f'{len(blocks) - len(failed)} of {len(blocks)} tables of {args.doc} {done} their study.json')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
