"""The ``timm-u1`` console script: answers ``--help`` and ``--version`` before the library loads.

``import timm_u1`` registers a ``u1_`` twin of every timm model, so it imports torch and timm: seconds
and over a GB. Python runs a package's ``__init__`` before any of its modules, so no module inside
``timm_u1`` can answer ``timm-u1 --help`` without that cost, and this one lives beside the package.
It knows the commands by name and summary only; a command line that names a command (its ``--help``
included) goes to :func:`timm_u1.cli.main`, which builds that command's parser alone and runs it.
"""
import argparse
import sys
from importlib import metadata, util
from pathlib import Path
from typing import List, Optional, Tuple, Type

__all__ = ['COMMANDS', 'main', 'top_level_parser', 'version']

# each command is the module timm_u1.cli.<name>; the summary is its line in `timm-u1 --help`
COMMANDS = {
    'analyze': 'sombrero energy, activation hue and symmetry-breaking report of a model layer',
    'memory': 'training-free angle-prototype memories over a frozen backbone (build, eval, predict)',
    'train': 'train or fine-tune with CE or CE + U(1) hue loss (Accelerate)',
    'timm-train': "timm's own train.py with the U(1) hue loss (every timm recipe option)",
    'compare': 'CE vs CE + U(1) from scratch: lr and lambda chosen on validation, paired test over seeds',
    'finetune': 'CE vs CE + U(1) on a pretrained backbone: linear head or last block (cached features)',
    'push': 'push a training run, an exported model or a memory to the Hugging Face Hub',
    'filters': "Gabor / LoG / orientation fits of a model's first-layer filters beside controls; stems by kernel size",
    'lateral': 'LGN pre-filter, first-layer filters and lateral kernel of a V1 model, with controls',
}

DISTRIBUTION = 'timm_u1'


def version() -> str:
    """The installed distribution's version (its metadata: reading it imports nothing of the package)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return 'unknown (timm_u1 is not installed; pip install timm_u1)'


def docs_folder() -> Optional[Path]:
    """The Markdown docs: ``timm_u1/docs`` in an installed wheel, ``docs/`` beside the package in a clone."""
    spec = util.find_spec('timm_u1')  # a top-level name: found, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    for folder in (package / 'docs', package.parent / 'docs'):
        if (folder / 'math.md').is_file():
            return folder
    return None


def top_level_parser(parser_class: Type[argparse.ArgumentParser] = argparse.ArgumentParser,
                     ) -> Tuple[argparse.ArgumentParser, argparse.Action]:
    """``timm-u1`` without its commands' parsers: the parser and the action commands are added to."""
    docs = docs_folder()
    parser = parser_class(
        prog='timm-u1', allow_abbrev=False,
        description='U(1) symmetry-breaking tools for timm models. `timm-u1 COMMAND --help` describes a command, '
                    'with examples.',
        epilog=f'documentation: {docs}' if docs else None)
    parser.add_argument('--version', action='version', version=f'%(prog)s {version()}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', parser_class=parser_class)
    return parser, commands


def main(argv: Optional[List[str]] = None) -> int:
    """``timm-u1 [ARGS]``: top-level help, version and usage errors here; a command in :mod:`timm_u1.cli`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in COMMANDS:
        from timm_u1.cli import main as run_command

        return run_command(argv)
    parser, commands = top_level_parser()
    for name, summary in COMMANDS.items():
        commands.add_parser(name, help=summary)
    parser.parse_args(argv)  # exits: --help and --version answered, anything else a usage error
    parser.print_help(sys.stderr)  # no command at all
    return 2


if __name__ == '__main__':
    sys.exit(main())
