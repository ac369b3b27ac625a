"""Independent measuring stick for generated soundtracks: reference metrics, model scores and the eval corpus.

Nothing here may import ``reasoning``, ``generator`` or ``agent``: the critic grades audio against the watcher's own
guesses, so the evaluation must share none of its code to be a fair check of it.
"""
