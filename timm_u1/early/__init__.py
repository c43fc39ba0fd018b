"""Early-layer symmetries (Bertoni et al., arXiv 2104.08537): fits of first-layer filters (:mod:`.fits`,
:mod:`.bank`), the first conv of any timm model and the stems of all of them (:mod:`.stems`), the real
pretrained filters of dlib's face ResNet (:mod:`.dlib_face`), and the filter analysis with its controls
(:mod:`.filters`), verdicts (:mod:`.verdicts`), report and plots. docs/filters.md says what each computes."""
from .bank import BankFits, fit_bank
from .filters import FilterReport, analyze_filters
from .stems import first_conv, list_stems
from .verdicts import CLAIMS, DECISION_RULE, verdicts

__all__ = ['BankFits', 'fit_bank', 'FilterReport', 'analyze_filters', 'first_conv', 'list_stems', 'CLAIMS',
           'DECISION_RULE', 'verdicts']
