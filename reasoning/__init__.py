"""Watching, critiquing and refining: everything that reasons about the sound plan."""
