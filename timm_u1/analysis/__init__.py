"""Bottleneck analysis: capture a layer, stream sombrero and hue statistics, controls and verdicts, reports."""
from .probe import BOTTLENECK, ActivationProbe, capture, layer_names, resolve_layer
from .stats import AngleClassAccumulator, SombreroStatistics
from .controls import run_controls, verdicts
from .analyzer import AnalysisReport, analyze, write_report

__all__ = [
    'BOTTLENECK', 'ActivationProbe', 'capture', 'layer_names', 'resolve_layer', 'AngleClassAccumulator',
    'SombreroStatistics', 'run_controls', 'verdicts', 'AnalysisReport', 'analyze', 'write_report',
]
