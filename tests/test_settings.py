"""Engine settings resolve as arguments > the seed's environment variables > defaults."""

import pytest

from reviewkit.settings import EMBEDDED, POD_DEFAULT_MODEL, resolve_settings


def test_defaults_without_gpu_pick_the_embedded_model():
    s = resolve_settings(env={})
    assert s.model == EMBEDDED and s.is_embedded
    assert s.tensor_parallel_size == 1 and s.enable_prefix_caching is True
    assert s.max_model_len == 2048  # the embedded model's working default


def test_environment_is_used_when_no_argument():
    env = {"LLM_MODEL": "Qwen/Qwen2.5-0.5B-Instruct", "VLLM_TENSOR_PARALLEL_SIZE": "2", "VLLM_MAX_MODEL_LEN": "4096"}
    s = resolve_settings(env=env)
    assert (s.model, s.tensor_parallel_size, s.max_model_len) == ("Qwen/Qwen2.5-0.5B-Instruct", 2, 4096)


def test_arguments_beat_the_environment():
    env = {"LLM_MODEL": "some/model", "VLLM_TENSOR_PARALLEL_SIZE": "2", "VLLM_MAX_MODEL_LEN": "4096"}
    s = resolve_settings("embedded", tensor_parallel_size=1, max_model_len=512, env=env)
    assert (s.model, s.tensor_parallel_size, s.max_model_len) == ("embedded", 1, 512)


@pytest.mark.parametrize(
    "flag,expected", [("true", POD_DEFAULT_MODEL), ("1", POD_DEFAULT_MODEL), ("false", EMBEDDED), ("0", EMBEDDED)]
)
def test_use_pod_vllm_forces_the_default_model(flag, expected):
    assert resolve_settings(env={"USE_POD_VLLM": flag}).model == expected


def test_llm_model_beats_use_pod_vllm():
    assert resolve_settings(env={"USE_POD_VLLM": "true", "LLM_MODEL": "embedded"}).model == EMBEDDED


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"VLLM_MAX_MODEL_LEN": "lots"}, "VLLM_MAX_MODEL_LEN"),
        ({"VLLM_TENSOR_PARALLEL_SIZE": "0"}, "VLLM_TENSOR_PARALLEL_SIZE"),
        ({"USE_POD_VLLM": "maybe"}, "USE_POD_VLLM"),
    ],
)
def test_bad_environment_values_name_the_variable(env, needle):
    with pytest.raises(ValueError, match=needle):
        resolve_settings(env=env)


def test_extra_engine_options_are_part_of_the_settings():
    a = resolve_settings("embedded", env={}, gpu_memory_utilization=0.8)
    b = resolve_settings("embedded", env={}, gpu_memory_utilization=0.9)
    assert a != b
    assert a.llm_kwargs()["gpu_memory_utilization"] == 0.8
    assert resolve_settings("embedded", env={}) == resolve_settings(env={})


def test_packaged_models_get_the_short_default_context_and_other_models_their_own():
    smol = resolve_settings("smollm2", env={})
    assert smol.is_packaged and not smol.is_embedded and smol.max_model_len == 2048
    assert resolve_settings("smollm2", max_model_len=4096, env={}).max_model_len == 4096
    folder = resolve_settings(env={"LLM_MODEL": "/models/smollm2-135m-instruct"})
    assert not folder.is_packaged and folder.max_model_len is None  # vLLM takes the model's own


def test_unknown_packaged_model_and_missing_package_name_the_fix():
    from reviewkit import embedded

    with pytest.raises(ValueError, match="smollm2"):
        embedded.model_dir("gemma-9000")
    with pytest.raises(ImportError, match="pip install"):
        embedded._wheel_file("no-such-distribution-rk", ".gguf", "pip install no-such-distribution-rk")
