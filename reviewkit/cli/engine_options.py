"""The engine options of every command that scores: one definition of each flag, its
environment variable, default and help, and the one place a command opens its engine.

``reviewkit analyze``, ``demo`` and ``serve`` add these flags and call :func:`open_engine`,
so an option means the same everywhere, and a secret (the engine's API key) is read from
the environment when the command runs, never at parse time (where ``--help`` would show it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from reviewkit.engines.base import Engine
from reviewkit.prompts import DEFAULT_LABELS

#: The environment variable of a remote engine's API key (``reviewkit serve`` has its own).
ENGINE_API_KEY_ENV = "REVIEWKIT_ENGINE_API_KEY"


@dataclass(frozen=True)
class EngineOption:
    """One engine flag: how it is written, parsed and explained."""

    flag: str
    help: str
    type: Any = None
    store_true: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.store_true:
            parser.add_argument(self.flag, action="store_true", help=self.help)
        else:
            parser.add_argument(self.flag, type=self.type, default=None, help=self.help)


ENGINE_OPTIONS = (
    EngineOption(
        "--model",
        "'embedded', 'smollm2', a Hugging Face id or a path (default: $LLM_MODEL, else "
        "Qwen/Qwen2.5-7B-Instruct on a CUDA GPU and 'embedded' elsewhere); with --url, the "
        "served model's name",
    ),
    EngineOption(
        "--url",
        "use a vLLM server instead of an engine here: http://HOST:8000/v1, or a RunPod "
        "Serverless endpoint's https://api.runpod.ai/v2/ENDPOINT_ID/openai/v1",
    ),
    EngineOption(
        "--engine-api-key",
        f"that server's API key (default: ${ENGINE_API_KEY_ENV}; prefer the variable: a flag shows in `ps`)",
    ),
    EngineOption("--max-model-len", "vLLM max_model_len (default: $VLLM_MAX_MODEL_LEN, else the model's)", type=int),
    EngineOption("--no-prefix-caching", "turn vLLM's prefix caching off", store_true=True),
)


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of :data:`ENGINE_OPTIONS`."""
    for option in ENGINE_OPTIONS:
        option.add_to(parser)


def add_labels_flag(parser: argparse.ArgumentParser) -> None:
    """``--labels``, for the commands that take a label set."""
    parser.add_argument(
        "--labels",
        nargs="+",
        default=list(DEFAULT_LABELS),
        help=f"labels (default: {' '.join(DEFAULT_LABELS)}; add neutral for three classes)",
    )


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """``reviewkit.load`` keyword arguments from the engine flags (unset flags are left to load)."""
    options: dict[str, Any] = {}
    if args.max_model_len:
        options["max_model_len"] = args.max_model_len
    if args.no_prefix_caching:
        options["enable_prefix_caching"] = False
    return options


@contextlib.contextmanager
def open_engine(args: argparse.Namespace) -> Iterator[Engine]:
    """The command's engine: the server at ``--url`` (``reviewkit.connect``), else one loaded here.

    An engine this command opened is closed at its end: vLLM's own exit-time shutdown gives
    its processes 5 s and then kills them with warnings.
    """
    from reviewkit import process_engine

    opened_here = process_engine.current_engine() is None
    if args.url:
        api_key = args.engine_api_key or os.environ.get(ENGINE_API_KEY_ENV)
        engine = process_engine.connect(args.url, api_key=api_key, model=args.model)
    else:
        engine = process_engine.load(args.model, **load_options(args))
    try:
        yield engine
    finally:
        if opened_here:
            process_engine.unload()
