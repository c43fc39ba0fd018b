"""Running ``timm-u1`` in the test process, for the tests of every command."""
from timm_u1.cli import main


def run(args, capsys):
    """(exit code, stdout, stderr) of ``timm-u1 ARGS``; argparse's usage errors come as exit 2."""
    try:
        code = main(args)
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The one line a refused command printed: no traceback, no internal error."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and 'Traceback' not in err and 'internal error' not in err, err
    return lines[0]
