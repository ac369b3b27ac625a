"""Sample-based offline foley renderer (CC0 bank + MiniLM matching + mixer)."""
