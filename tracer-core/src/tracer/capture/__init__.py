"""Capture beyond `log()`: gradient health, system metrics and batch samples, as collectors.

Nothing here imports torch at import time; torch is imported when a model is watched.
"""
