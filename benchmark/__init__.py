"""Noisy EHR Bench: learning under label noise on multimodal, multi-label EHR."""
__version__ = "0.1.0"
