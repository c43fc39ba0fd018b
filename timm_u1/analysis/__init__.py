"""Bottleneck analysis: capture a layer, stream sombrero and hue statistics, controls and verdicts, reports."""
from .probe import BOTTLENECK, ActivationProbe, capture, layer_names, resolve_layer
from .decoding import AngleClassAccumulator
from .sombrero import SombreroStatistics
from .controls import run_controls
from .claims import verdicts
from .report import AnalysisReport, write_report
from .analyzer import analyze

__all__ = [
    'BOTTLENECK', 'ActivationProbe', 'capture', 'layer_names', 'resolve_layer', 'AngleClassAccumulator',
    'SombreroStatistics', 'run_controls', 'verdicts', 'AnalysisReport', 'analyze', 'write_report',
]
