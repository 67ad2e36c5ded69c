# Two commands on a fresh clone:
#   make demo   set up .venv, segment the synthetic sample photos in examples/ with the default model
#   make test   set up .venv, run the test suite
#   make serve  set up .venv, start the web app on http://127.0.0.1:7860
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test serve install samples benchmark docs clean

$(STAMP): setup.cfg pyproject.toml examples/retinaseg-frangi/setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test,onnx,ray,web,browser,dicom]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/retinaseg run examples/images demo-output --overlay --save-prob
	@echo "Outputs: demo-output/raw_pre (masks at raw size), demo-output/overlay (masks over the photos),"
	@echo "         demo-output/small_pre, demo-output/prob, demo-output/run.json"

test: $(STAMP)
	$(BIN)/python -m pytest -q

serve: $(STAMP)
	$(BIN)/retinaseg serve

# Regenerate the synthetic sample photos in examples/images (they are committed).
samples: $(STAMP)
	$(BIN)/python -m retinaseg.synthetic examples/images

benchmark: $(STAMP)
	$(BIN)/python benchmarks/runner_speed.py

# Regenerate docs/cli.md from the commands' --help (a test fails when it is stale) and the README's picture.
docs: $(STAMP)
	$(BIN)/python tools/cli_reference.py
	$(BIN)/python tools/overview_picture.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache build *.egg-info
