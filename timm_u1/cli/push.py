"""``timm-u1 push``: publish a training run, an exported model or a memory to the Hugging Face Hub.

    timm-u1 push runs/digits --repo-id my-org/u1-resnet10t-digits
    timm-u1 push runs/memory/digits --repo-id my-org/u1-resnet10t-digits --create-pr
"""
import argparse

from ..publish import push_path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'push', help='Push a training run, an exported model or a memory to the Hugging Face Hub.',
        description='Push a training run directory (its export/, plots and metrics.jsonl), an exported '
                    'model directory (config.json + model.safetensors) or an angle-prototype memory '
                    'directory (memory.safetensors + memory.json, pushed to memory/ by default).')
    parser.add_argument('path', help='run directory, export directory or memory directory')
    parser.add_argument('--repo-id', required=True, help='ORG/NAME on the Hub')
    parser.add_argument('--path-in-repo', default=None, help='sub-folder in the repo (memories: memory)')
    parser.add_argument('--revision', default=None, help='branch to push to (created if missing)')
    parser.add_argument('--private', action='store_true', default=None, help='create the repo private')
    parser.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing')
    parser.add_argument('--commit-message', default=None)
    parser.add_argument('--token', default=None, help='Hub token (default: HF_TOKEN or the saved login)')
    parser.add_argument('--endpoint', default=None, help='Hub endpoint (default: HF_ENDPOINT or huggingface.co)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = push_path(
        args.path, args.repo_id, path_in_repo=args.path_in_repo, token=args.token, private=args.private,
        revision=args.revision, create_pr=args.create_pr, commit_message=args.commit_message,
        endpoint=args.endpoint)
    print(f'Pushed {args.path} to {args.repo_id}: {info.pr_url or info.commit_url}')
    return 0
