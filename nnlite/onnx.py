"""ONNX export: ``export_onnx`` and ``export_rule`` (how a layer of your own exports),
defined in ``nnlite.files.onnx``."""
from .files.onnx import OnnxGraph, export_onnx, export_rule

__all__ = ["export_onnx", "export_rule", "OnnxGraph"]
