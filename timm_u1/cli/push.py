"""``timm-u1 push``: publish a training run, an exported model or a memory to the Hugging Face Hub.

    timm-u1 push runs/digits --repo-id my-org/u1-resnet10t-digits
    timm-u1 push runs/memory/digits --repo-id my-org/u1-resnet10t-digits --create-pr
"""
import argparse

from .options import hub_license, non_empty


def repo_id(text: str) -> str:
    """A Hub repo id, ORG/NAME."""
    from ..io.specs import parse_hub_ref

    try:
        ref = parse_hub_ref(f'hf-hub:{text.strip()}')
    except ValueError as e:
        raise argparse.ArgumentTypeError(f'must be a Hub repo id ORG/NAME, got {text!r} ({e})') from None
    if ref.revision:
        raise argparse.ArgumentTypeError(f'must be ORG/NAME without @REVISION (use --revision), got {text!r}')
    return ref.repo_id


def hub_url(text: str) -> str:
    """The base URL of a Hub, http(s)://HOST[:PORT]."""
    from urllib.parse import urlparse

    url = urlparse(text.strip())
    if url.scheme not in ('http', 'https') or not url.netloc:
        raise argparse.ArgumentTypeError(f'must be a URL such as https://huggingface.co, got {text!r}')
    return text.strip().rstrip('/')


def repo_folder(text: str) -> str:
    """A folder inside the repo: relative, without '..'."""
    parts = text.strip().strip('/').split('/')
    if not text.strip() or text.strip().startswith('/') or '..' in parts:
        raise argparse.ArgumentTypeError(f'must be a folder inside the repo such as memory, got {text!r}')
    return '/'.join(parts)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'push', help='Push a training run, an exported model or a memory to the Hugging Face Hub.',
        description='Push a training run directory (its export/, plots and metrics.jsonl), an exported '
                    'model directory (config.json + model.safetensors) or an angle-prototype memory '
                    'directory (memory.safetensors + memory.json, pushed to memory/ by default). Everything '
                    'is checked as a load checks it before anything is sent; a Hub silent for TIMM_U1_HUB_TIMEOUT '
                    'seconds (default 30) ends the push. Example: timm-u1 push runs/digits --repo-id '
                    'me/u1-digits --license mit')
    parser.add_argument('path', type=non_empty, help='run directory, export directory or memory directory')
    parser.add_argument('--repo-id', required=True, type=repo_id, help='ORG/NAME on the Hub')
    parser.add_argument('--path-in-repo', default=None, type=repo_folder,
                        help='sub-folder in the repo (default: the root for models, memory for memories)')
    parser.add_argument('--revision', default=None, type=non_empty, help='branch to push to (created if missing)')
    parser.add_argument('--private', action='store_true', default=None, help='create the repo private')
    parser.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing')
    parser.add_argument('--commit-message', default=None, type=non_empty)
    parser.add_argument('--license', default=None, type=hub_license,
                        help="the card's licence, a Hub licence id (apache-2.0, mit, cc-by-4.0, ..., other); "
                             "default: what the export recorded, else the base weights' licence, else none")
    parser.add_argument('--token', default=None, type=non_empty,
                        help='Hub token (default: HF_TOKEN or the saved login)')
    parser.add_argument('--endpoint', default=None, type=hub_url,
                        help='Hub endpoint URL (default: HF_ENDPOINT or https://huggingface.co)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..publish import push_path

    info = push_path(
        args.path, args.repo_id, path_in_repo=args.path_in_repo, token=args.token, private=args.private,
        revision=args.revision, create_pr=args.create_pr, commit_message=args.commit_message,
        endpoint=args.endpoint, license=args.license)
    print(f'Pushed {args.path} to {args.repo_id}: {info.pr_url or info.commit_url}')
    return 0
