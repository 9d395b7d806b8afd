# The two commands of the README: `make demo` (the whole loop on embedded defaults) and `make test`.
# Both bootstrap uv and the locked environment (uv.lock) themselves: scripts/bootstrap.sh prints uv's path.
SHELL := /bin/bash
export GX_ANALYTICS_ENABLED := False
export PYTHONUNBUFFERED := 1
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: demo test lint env

env:
	@scripts/bootstrap.sh >/dev/null

demo:
	@uv=$$(scripts/bootstrap.sh) && $$uv run --frozen garmentseg demo

# Format, lint (with the complexity and unused-argument rules of pyproject.toml), then the suite.
lint:
	@uv=$$(scripts/bootstrap.sh) && $$uv run --frozen ruff format --check . && $$uv run --frozen ruff check .

test: lint
	@uv=$$(scripts/bootstrap.sh) && $$uv run --frozen pytest $(PYTEST_ARGS)
