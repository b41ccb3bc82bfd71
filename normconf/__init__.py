"""normconf: the reference spec and conformance suite for neural-network normalization layers."""

__version__ = "0.1.0"
