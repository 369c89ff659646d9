"""gmai: an open toolkit for general medical vision-language models (GMAI-VL and GMAI-VL-R1)."""

__version__ = "0.1.0"
