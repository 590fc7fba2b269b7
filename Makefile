# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
INI ?= development.ini
BIN := $(VENV)/bin

# Local services used by the tests when they answer (CI always provides them).
export PREFCENTER_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
export PREFCENTER_TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
export PREFCENTER_TEST_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/

PYTEST_ARGS ?=

.PHONY: run test lint format bench install migrate seed clean messages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Re-extract translatable strings and update the fr/en catalogs (then translate the new ones).
messages: install
	$(BIN)/pybabel extract -F babel.cfg -k _ --no-location --sort-output --project prefcenter \
		-o prefcenter/locale/prefcenter.pot .
	$(BIN)/pybabel update -D prefcenter -i prefcenter/locale/prefcenter.pot -d prefcenter/locale \
		--no-fuzzy-matching --width 100

migrate: install
	$(BIN)/prefcenter -c $(INI) migrate

seed: migrate
	$(BIN)/prefcenter -c $(INI) seed-demo

run: seed
	$(BIN)/prefcenter -c $(INI) serve

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var/*.sqlite* .pytest_cache
