"""The arms of the CE vs CE + U(1) studies, what each is compared with, and their names in reports."""
from typing import Dict, List, Sequence, Tuple

__all__ = ['REFERENCE', 'PERMUTED', 'LABELS', 'comparisons_of', 'comparison_name', 'comparison_label',
           'check_arms', 'class_order']

# every arm is compared with cross-entropy
REFERENCE = 'ce'
# the permuted-angle control takes the natural-order arm's chosen lambda and lr (it has no selection
# of its own), so the two are compared directly, paired by seed, at the same settings
PERMUTED: Dict[str, str] = {'u1_perm': 'u1_logits'}
LABELS = {
    'ce': 'CE', 'ls': 'CE, label smoothing', 'u1_logits': 'CE + λ U(1), logits', 'u1_spatial': 'CE + λ U(1), spatial',
    'u1_probs': 'CE + λ U(1), probs', 'u1_perm': 'CE + λ U(1), permuted angles',
}


def check_arms(arms: Sequence[str], known: Sequence[str]) -> Tuple[str, ...]:
    """``arms`` if a study can compare them: known, distinct, with CE, and a permuted arm's natural twin."""
    unknown = [a for a in arms if a not in known]
    if unknown:
        raise ValueError(f'Unknown arms {unknown}; choose from {list(known)}.')
    if len(set(arms)) != len(arms):
        raise ValueError(f'Arms must differ, got {list(arms)}.')
    if REFERENCE not in arms:
        raise ValueError(f'The arms must include "{REFERENCE}": every other arm is compared to it.')
    for permuted, natural in PERMUTED.items():
        if permuted in arms and natural not in arms:
            raise ValueError(f'{permuted} runs at the lambda and lr chosen for {natural}; add {natural} to the arms.')
    return tuple(arms)


def comparisons_of(arms: Sequence[str]) -> List[Tuple[str, str]]:
    """(arm, reference) pairs of a task: every arm against CE, then natural against permuted class order."""
    pairs = [(arm, REFERENCE) for arm in arms if arm != REFERENCE]
    pairs += [(natural, permuted) for permuted, natural in PERMUTED.items() if permuted in arms and natural in arms]
    return pairs


def comparison_name(arm: str, reference: str) -> str:
    """The key of a comparison in a summary: the arm's name against CE, 'A vs B' otherwise."""
    return arm if reference == REFERENCE else f'{arm} vs {reference}'


def comparison_label(arm: str, reference: str) -> str:
    """A comparison as a report names it."""
    if reference == REFERENCE:
        return LABELS.get(arm, arm)
    if PERMUTED.get(reference) == arm:
        return 'natural minus permuted class order'
    return f'{LABELS.get(arm, arm)} minus {LABELS.get(reference, reference)}'


def class_order(seed: int, num_classes: int) -> 'torch.Tensor':
    """The permuted arm's class-to-angle assignment for one seed: class ``order[j]`` gets angle 2 pi j / C."""
    import torch

    g = torch.Generator().manual_seed(10_000 + seed)
    return torch.randperm(num_classes, generator=g)
