"""Getting a validated object out of a language model: extract, repair, validate, re-ask, then fail clearly.

There is no silent fallback: after ``max_attempts`` the caller gets ``BackendError`` whose ``raw_output``
holds every reply, so the Round shows what the model actually said.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import tokenize
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

from pydantic import ValidationError

from reasoning.llm_common.chat import ChatModel, Generation
from reasoning.llm_common.prompts import PromptTemplate
from contract.errors import BackendError
from contract.plan import MAX_JSON_DEPTH, JSONRejected, json_depth, loads_bounded

log = logging.getLogger(__name__)
T = TypeVar("T")

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\n?(.*?)```", re.DOTALL)
_PY_LITERALS = {"true": "True", "false": "False", "null": "None"}  # same lengths: positions stay valid
REASK_ECHO_CHARS = 1500  # how much of a bad reply is echoed back; bounds the re-ask prompt
MAX_REPLY_CHARS = 200_000  # a longer reply is refused before any parsing (a plan is a few kB)
RAW_KEEP_CHARS = 64_000  # what is kept of each reply for the Round's raw output


class OutputProblem(ValueError):
    """What was wrong with one reply, phrased so that it can be sent back to the model."""


class ReplyInvalid(BackendError):
    """Every attempt was rejected. ``raw_output`` joins all replies; ``attempts`` has them one by one."""

    def __init__(self, message: str, raw_output: str, attempts: list[dict], model_id: str, prompt_version: str = ""):
        super().__init__(message, raw_output=raw_output)
        self.attempts, self.model_id, self.prompt_version = attempts, model_id, prompt_version


@dataclass
class Parsed(Generic[T]):
    value: T
    raw_output: str
    attempts: list[dict] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)


def _balanced_object(text: str, start: int) -> str | None:
    """The ``{...}`` starting at ``start``, matched outside strings; None when it never closes."""
    depth, quote, escaped = 0, None, False
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def json_candidates(text: str, truncated: bool = False) -> list[str]:
    """Balanced ``{...}`` blocks, fenced ones first; raises when there is none, saying why."""
    if not text or not text.strip():
        raise OutputProblem("the reply was empty; reply with one JSON object")
    out = []
    for source in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        start = source.find("{")
        while start != -1:
            obj = _balanced_object(source, start)
            if obj is None:
                break
            out.append(obj)
            start = source.find("{", start + len(obj))
    if out:
        return out
    if "{" in text:
        cut = " (the reply hit the token limit: it was cut off)" if truncated else ""
        raise OutputProblem(f"the JSON object never closes{cut}; reply with a shorter, complete JSON object")
    cut = " and hit the token limit" if truncated else ""
    raise OutputProblem(f"the reply contains no JSON object{cut}; reply with one JSON object only, no prose")


def extract_json_text(text: str, truncated: bool = False) -> str:
    """The first candidate JSON object in a reply (a fenced block if there is one)."""
    return json_candidates(text, truncated)[0]


def _python_literal(text: str):
    """Parse JSON-ish text as a Python literal: accepts single quotes and trailing commas, nothing executable."""
    toks = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME and tok.string in _PY_LITERALS:
            tok = tok._replace(string=_PY_LITERALS[tok.string])
        toks.append(tok)
    return ast.literal_eval(tokenize.untokenize(toks))


def loads_lenient(text: str) -> tuple[object, list[str]]:
    """Bounded ``json.loads``, then a literal-syntax repair (single quotes, trailing commas, True/None spellings).

    Only a syntax error is repaired; too deep, NaN/Infinity or absurd numbers are refused as they are."""
    try:
        return loads_bounded(text, max_bytes=None), []
    except JSONRejected as exc:
        first = str(exc)
    if not first.startswith("invalid JSON"):
        raise OutputProblem(f"the JSON is not usable: {first}; reply with one plain JSON object") from None
    try:
        value = _python_literal(text)
    except (SyntaxError, ValueError, tokenize.TokenError, MemoryError, RecursionError):
        raise OutputProblem(first) from None
    # The repair must yield plain, finite JSON data; anything else (sets, bytes, complex, inf) is not a repair.
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise OutputProblem(first) from None
    try:
        too_deep = json_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH
    except JSONRejected as exc:
        raise OutputProblem(f"the JSON is not usable: {exc}") from None
    if too_deep:
        raise OutputProblem(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep") from None
    return value, ["repaired JSON syntax (quotes/trailing commas)"]


def parse_json_object(text: str, truncated: bool = False) -> tuple[dict, list[str]]:
    """The first candidate that parses (prose may hold stray braces); else the first candidate's problem."""
    first: OutputProblem | None = None
    for cand in json_candidates(text, truncated):
        try:
            value, repairs = loads_lenient(cand)
        except OutputProblem as exc:
            first = first or exc
            continue
        return value, repairs  # a candidate starts with "{", so it parses to a dict
    raise first


def describe_validation_error(exc: ValidationError, limit: int = 6) -> str:
    """Pydantic's errors as short ``field.path: message`` lines a model can act on."""
    lines = []
    errors = exc.errors(include_url=False, include_input=False)  # never echo a (possibly huge) input back
    for err in errors[:limit]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(object)"
        lines.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(errors) - limit
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def _clip(text: str, n: int = REASK_ECHO_CHARS) -> str:
    return text if len(text) <= n else text[:n] + " …[cut]"


def keep_raw(text: str, n: int = RAW_KEEP_CHARS) -> str:
    """A reply as stored with the round: whole when short, else its start and how much was cut."""
    return text if len(text) <= n else text[:n] + f"\n…[cut: {len(text) - n} more characters]"


def ask_json(chat: ChatModel, messages: list[dict], validate: Callable[[dict, bool], T], *, reask: PromptTemplate,
             max_new_tokens: int, max_attempts: int = 3, what: str = "reply", prompt_version: str = "") -> Parsed[T]:
    """Ask, parse and validate; on a problem re-ask once per attempt with the problem stated.

    ``validate(obj, last_attempt)`` returns the value or raises ``OutputProblem`` / ``ValidationError``;
    ``last_attempt`` lets it accept a recorded repair it would rather have the model make itself.
    Only the latest bad reply is echoed back, so the conversation does not grow with the retries.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    attempts: list[dict] = []
    convo = list(messages)
    for i in range(max_attempts):
        gen: Generation = chat.chat(convo, max_new_tokens)
        text = gen.text if isinstance(gen.text, str) else str(gen.text)
        record = {"raw": keep_raw(text), "truncated": gen.truncated, "prompt_tokens": gen.prompt_tokens,
                  "completion_tokens": gen.completion_tokens, "wall_s": round(gen.wall_s, 3), "error": None}
        attempts.append(record)
        try:
            if len(text) > MAX_REPLY_CHARS:  # refused before parsing: the cost of parsing grows with the size
                raise OutputProblem(f"the reply is {len(text)} characters long, over the {MAX_REPLY_CHARS} limit; "
                                    "reply with one short JSON object")
            obj, repairs = parse_json_object(text, gen.truncated)
            value = validate(obj, i == max_attempts - 1)
            return Parsed(value=value, raw_output=text, attempts=attempts, repairs=repairs)
        except ValidationError as exc:
            problem = describe_validation_error(exc)
        except OutputProblem as exc:
            problem = str(exc)
        record["error"] = problem
        log.info("%s: attempt %d/%d rejected: %s", chat.model_id, i + 1, max_attempts, problem)
        _, user = reask.render(error=problem, max_new_tokens=max_new_tokens)
        convo = list(messages) + [{"role": "assistant", "content": _clip(text) or "(empty)"},
                                  {"role": "user", "content": user}]
    raw = "\n".join(f"----- attempt {k + 1}: {a['error']} -----\n{a['raw']}" for k, a in enumerate(attempts))
    raise ReplyInvalid(f"{chat.model_id}: no valid {what} after {max_attempts} attempt(s); "
                       f"last problem: {attempts[-1]['error']}", raw_output=raw, attempts=attempts,
                       model_id=chat.model_id, prompt_version=prompt_version)
