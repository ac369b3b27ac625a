"""Sample-based offline foley renderer (CC0 bank + MiniLM matching + mixer).

Modules: ``bank`` (described CC0 recordings, text search, decoded-audio cache), ``text_embed`` (re-export of ``models.text_embed``: MiniLM
wrapper with a word-overlap fallback), ``mixer`` (placement, looping, panning, mastering), ``procedural``
(noise beds and hits when nothing matches) and ``renderer`` (``OfflineRenderer``, ``make``, ``describe``).
Nothing heavy is imported here, so the backend registry can describe the renderer cheaply.
"""
