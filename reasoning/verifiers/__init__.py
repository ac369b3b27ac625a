"""Critic verifiers: independent neural scorers (Synchformer DeSync, CLAP, Audiobox Aesthetics) behind the Critic
protocol, and the composite critic that stacks them on top of another critic (``--critic offline+desync+clap``)."""

VERIFIERS = ("desync", "clap", "aesthetics")  # registry names, in the order ``verified`` stacks them
