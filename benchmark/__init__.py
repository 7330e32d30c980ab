"""Noisy EHR Bench: learning under label noise on multimodal, multi-label EHR."""
__version__ = "0.2.0"
