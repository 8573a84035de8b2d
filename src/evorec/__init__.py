"""evorec: long-term user interest evolution on e-commerce platforms."""

__version__ = "0.1.0"
