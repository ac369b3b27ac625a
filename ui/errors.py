"""Turn stored exception text ("BackendError: ...") into a sentence a user can act on."""

from __future__ import annotations

import re

_HINTS = [
    ("ModelMissing", "A model's weights are not on this machine. {msg} (`foleyloop models` lists what is installed.)"),
    ("MediaError", "The video could not be used: {msg}"),
    ("BackendError", "A backend could not do its job: {msg}"),
    ("UnknownBackend", "The run names a backend this installation does not have: {msg}"),
    ("MemoryError", "The machine ran out of memory. Try a shorter clip or a smaller model."),
    ("OutOfMemoryError", "The accelerator ran out of memory. Try a shorter clip, fp16/bf16, or the CPU."),
    ("FileNotFoundError", "A file the run needs has gone missing: {msg}"),
    ("TimeoutError", "A step took too long and was stopped: {msg}"),
]
_PREFIX = re.compile(r"^(?P<kind>[A-Za-z_][\w.]*(?:Error|Exception|Missing|Backend|Interrupt)):\s*(?P<msg>.*)$", re.S)


def plain(error: str | None) -> str:
    if not error:
        return ""
    m = _PREFIX.match(error.strip())
    kind, msg = (m["kind"].rsplit(".", 1)[-1], m["msg"].strip()) if m else ("", error.strip())
    for name, template in _HINTS:
        if kind == name:
            return template.format(msg=msg)
    if kind:
        return f"The run stopped with an internal error ({kind}): {msg}"
    return msg
