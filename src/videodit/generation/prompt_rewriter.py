"""An optional hook that rewrites each prompt before generation, e.g. a short prompt into the style of the
training captions. Off by default; when on, the manifest keeps the prompt given, the one generated from and the
rewriter's name.

A rewriter is named `module:function` (any importable function from str to str: a rule, or a call into a local
model). `expand_shapes_prompt` is the built-in one for the shapes domain.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from videodit.data.synthetic import SHAPES_DOMAIN
from videodit.evaluation.prompt_adherence import WORD, caption_words


class PromptRewriterError(ValueError):
    """A rewriter that cannot be loaded or that returned no text; the message names its `module:function`."""


def load_rewriter(spec: str) -> Callable[[str], str]:
    """The function `spec` ("module:function") names."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise PromptRewriterError(f"prompt rewriter {spec!r}: expected module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PromptRewriterError(f"prompt rewriter {spec!r}: cannot import {module_name} ({exc})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise PromptRewriterError(f"prompt rewriter {spec!r}: {module_name} has no function {function_name}")
    return function


def rewrite_prompts(prompts: list[str], spec: str) -> list[str]:
    """Each prompt through the rewriter `spec`; each result must be non-empty text."""
    rewriter = load_rewriter(spec)
    rewritten = []
    for prompt in prompts:
        result = rewriter(prompt)
        if not isinstance(result, str) or not result.strip():
            raise PromptRewriterError(f"prompt rewriter {spec!r} returned {result!r} for {prompt!r}, not a non-empty string")
        rewritten.append(result.strip())
    return rewritten


def expand_shapes_prompt(prompt: str) -> str:
    """"red square right" -> "a red square moves right": the values a short prompt names (by name or synonym),
    in the domain's caption template; an attribute it does not name is left out (a shape: "shape"). A prompt
    naming no shape and no colour comes back as it is."""
    # Held-out synonyms too (`caption_words` has them): a user's "crimson disc" is asked for in the trained words.
    vocabulary = caption_words(SHAPES_DOMAIN)
    found = {}
    for word in WORD.findall(prompt.lower()):
        for attribute, words in vocabulary.items():
            if word in words and attribute not in found:  # the first value named wins
                found[attribute] = words[word]
    if "shape" not in found and "colour" not in found:
        return prompt
    filled = SHAPES_DOMAIN.prompt_template.format(**{a: found.get(a, "shape" if a == "shape" else "") for a in vocabulary})
    return " ".join(filled.split())
