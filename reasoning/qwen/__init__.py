"""Qwen2.5-VL (and optionally Qwen2.5-Omni) run locally through transformers: watcher, refiner and judge.

The models are loaded lazily and shared by the three roles through ``loader.SLOTS``; see ``loader`` for how
the graph releases the VLM before a generator that would not fit next to it.
"""
