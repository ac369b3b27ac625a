"""Shared neural models and their weight loading (Synchformer, CLAP, Audiobox Aesthetics)."""
