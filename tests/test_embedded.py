"""The embedded model's converted copy: complete, reusable, never half-written."""

import os
import signal
import subprocess
import sys
import time

from reviewkit import embedded


def test_converted_copy_is_complete_and_prepends_bos(engine):
    folder = embedded.model_dir()
    assert embedded.is_converted(folder)
    assert (folder / "model.safetensors").stat().st_size > 400_000_000
    ids = engine.tokenizer("맛있어요")["input_ids"]
    assert ids[0] == embedded.GEMMA.bos_token_id
    assert embedded.ensure_converted(quiet=True) == folder  # reused, not converted again


def test_interrupted_conversion_leaves_no_model_behind(tmp_path):
    env = {**os.environ, "REVIEWKIT_MODEL_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reviewkit.embedded"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(tmp_path.glob(".staging-*/gguf/*")):
        time.sleep(0.2)  # wait until the conversion is under way
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    target = tmp_path / embedded.model_dir().name
    assert not target.exists()  # only a staging folder may remain, never the model folder
    code = (
        f"import os; os.environ['REVIEWKIT_MODEL_DIR']={str(tmp_path)!r}; from reviewkit import embedded; "
        "print(embedded.is_converted(embedded.model_dir()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"
