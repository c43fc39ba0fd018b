""" Check that the tables of docs/analysis.md are what the analyses the page names write.

    python scripts/check_docs_analysis.py --runs runs            # after the commands docs/analysis.md names
    python scripts/check_docs_analysis.py --runs runs --write    # put the regenerated tables into the page

The page embeds each table between ``<!-- table KIND of runs/PATH [runs/PATH ...] -->`` and ``<!-- end of table -->``,
where KIND is one of timm_u1.analysis.summary.TABLES and each PATH a report folder (its report.json) or a JSON file,
relative to the folder --runs names. For each block the script makes the table again from those files and compares
it with the page's copy; it exits 1 and names every block that differs or whose files are missing. With --write it
replaces each block's table by the regenerated one instead (and still fails for a block it cannot make).
"""
import argparse
import json
import re
import sys
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BLOCK = re.compile(r'<!-- table (?P<kind>[\w-]+) of (?P<paths>runs/[^>]*?) -->\n(?P<table>.*?)\n?<!-- end of table -->',
                   re.S)


def embedded_tables(doc: str) -> List[re.Match]:
    """Every marked block of the page, in order."""
    return list(BLOCK.finditer(doc))


def regenerate(kind: str, paths: List[str], runs: Path) -> str:
    """The table of ``kind`` made from the files of ``paths`` (each ``runs/...``) under ``runs``."""
    from timm_u1.analysis.summary import summary_table

    reports: List[Tuple[str, dict]] = []
    for path in paths:
        target = runs / path[len('runs/'):]
        file = target if target.suffix == '.json' else target / 'report.json'  # a report folder, or a JSON file
        if not file.is_file():
            raise FileNotFoundError(f'no {file} (run the command the page names)')
        reports.append((Path(path).stem, json.loads(file.read_text(encoding='utf-8'))))
    if len({name for name, _ in reports}) < len(reports):  # e.g. two models on the digits: name the runs too
        reports = [(str(Path(path[len('runs/'):]).with_suffix('')), report) for path, (_, report) in zip(paths, reports)]
    return summary_table(kind, reports)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs', type=Path, required=True, help="the folder the page's runs/ stands for")
    p.add_argument('--doc', type=Path, default=ROOT / 'docs' / 'analysis.md')
    p.add_argument('--write', action='store_true', help='replace the embedded tables by the regenerated ones')
    args = p.parse_args(argv)
    doc = args.doc.read_text(encoding='utf-8')
    blocks = embedded_tables(doc)
    if not blocks:
        print(f'{args.doc} embeds no table block', file=sys.stderr)
        return 1
    failed, pieces, last = [], [], 0
    for block in blocks:
        what = f"table {block['kind']} of {block['paths']}"
        try:
            fresh = regenerate(block['kind'], block['paths'].split(), args.runs).strip()
        except (OSError, ValueError, KeyError, TypeError) as e:
            failed.append(f'{what}: {e}')
            continue
        if args.write:
            pieces += [doc[last:block.start('table')], fresh + '\n']
            last = block.end('table') + (1 if doc[block.end('table'):].startswith('\n') else 0)
        elif fresh != block['table'].strip():
            failed.append(f"{what}: the page's table differs from the one its files give")
    if args.write:
        from timm_u1.files import write_text

        write_text(args.doc, ''.join(pieces) + doc[last:])
    for line in failed:
        print(line, file=sys.stderr)
    done = 'were rewritten from' if args.write else 'match'
    print(f'{len(blocks) - len(failed)} of {len(blocks)} tables of {args.doc} {done} their runs')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
