"""adlight: anomaly detection in images with PyTorch Lightning."""

__version__ = "0.1.0"
