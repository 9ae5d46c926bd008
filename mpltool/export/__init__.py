"""Exporting the frozen graph to other formats (ONNX) with a parity check, and running ONNX models."""
