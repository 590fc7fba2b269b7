"""The OpenAPI document is the contract: requests and responses are checked against it.

One file (openapi.yaml) says which scopes an operation needs, which parameters and body it
takes and what it answers; the API's views cannot drift from it because every request is
validated before the view runs and every JSON response before it leaves.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from ..errors import InvalidField

try:  # optional accelerator (a schemathesis dependency); pure-Python validation without it
    import jsonschema_rs
except ImportError:  # pragma: no cover
    jsonschema_rs = None

SPEC_PATH = Path(__file__).with_name("openapi.yaml")
_FORMATS = FormatChecker()


@functools.cache
def _load(path: Path) -> Spec:
    # Parsed once per process: the document ships with the code and never changes at run time.
    return Spec(yaml.safe_load(path.read_text(encoding="utf-8")))


class ResponseDrift(RuntimeError):
    """A view answered something the OpenAPI document does not describe (a bug: 500)."""


@dataclasses.dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    scopes: tuple[str, ...]
    parameters: tuple[dict[str, Any], ...]
    body_schema: dict[str, Any] | None
    responses: dict[str, Any]
    summary: str = ""
    description: str = ""


def _pointer(path: Any) -> str:
    return "".join(f"/{str(part).replace('~', '~0').replace('/', '~1')}" for part in path)


def _schema_error(error: ValidationError) -> InvalidField:
    """One jsonschema error as an InvalidField whose field is a JSON pointer."""
    where = list(error.absolute_path)
    instance = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
        instance, Mapping
    ):
        known = set(schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in known) or sorted(instance)
        name = extra[0]
        return InvalidField(
            _pointer([*where, name]), instance[name], "is not a known field", "unknown_field"
        )
    if error.validator == "required" and isinstance(instance, Mapping):
        missing = [k for k in error.validator_value if k not in instance]
        return InvalidField(_pointer([*where, missing[0]]), None, "is required", "required")
    reasons = {
        "type": "has the wrong type",
        "enum": "is not one of "
        + ", ".join(map(str, error.validator_value if error.validator == "enum" else [])),
        "maxItems": f"has more than {error.validator_value} items",
        "minItems": f"has fewer than {error.validator_value} items",
        "maxLength": f"is longer than {error.validator_value} characters",
        "minLength": f"is shorter than {error.validator_value} characters",
        "pattern": "does not have the expected form",
        "format": f"is not a valid {error.validator_value}",
        "minimum": f"is less than {error.validator_value}",
        "maximum": f"is more than {error.validator_value}",
        "uniqueItems": "repeats an item",
    }
    reason = reasons.get(str(error.validator), error.message)
    return InvalidField(_pointer(where), instance, reason, f"schema_{error.validator}")


class Spec:
    """The parsed OpenAPI document with a validator per operation."""

    def __init__(self, document: dict[str, Any], *, extended: bool = False) -> None:
        self.document = document
        self.extended = extended  # merged with another package's fragment
        self.operations: dict[str, Operation] = {}
        # id(schema) -> (schema, validators): the schemas are the document's own, kept alive.
        self._compiled: dict[int, tuple[Any, Draft202012Validator, Any]] = {}
        self._parameters: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for path, item in document["paths"].items():
            shared = tuple(item.get("parameters", ()))
            for method, op in item.items():
                if method == "parameters":
                    continue
                body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
                self.operations[op["operationId"]] = Operation(
                    operation_id=op["operationId"],
                    method=method.upper(),
                    path=path,
                    scopes=tuple(op.get("x-scopes", ())),
                    parameters=shared + tuple(op.get("parameters", ())),
                    body_schema=body.get("schema"),
                    responses=op["responses"],
                    summary=op.get("summary", ""),
                    description=op.get("description", ""),
                )

    @classmethod
    def load(cls, path: Path = SPEC_PATH) -> Spec:
        return _load(path)

    def extended_with(self, fragment: Mapping[str, Any]) -> Spec:
        """A new Spec with another file's ``paths`` and ``components`` merged in."""
        document = json.loads(json.dumps(self.document))  # a deep copy of plain data
        for path, item in fragment.get("paths", {}).items():
            if path in document["paths"]:
                raise ValueError(f"the path {path} is described twice")
            document["paths"][path] = item
        for kind, items in fragment.get("components", {}).items():
            section = document["components"].setdefault(kind, {})
            for name, item in items.items():
                if name in section and section[name] != item:
                    raise ValueError(f"components/{kind}/{name} is described twice")
                section[name] = item
        return Spec(document, extended=True)

    @functools.cache  # noqa: B019 -- one Spec per process, kept for its life
    def _validators(self, schema_json: str) -> tuple[Draft202012Validator, Any]:
        schema = {**json.loads(schema_json), "components": self.document["components"]}
        fast = (
            jsonschema_rs.validator_for(schema, validate_formats=True)
            if jsonschema_rs is not None
            else None
        )
        return Draft202012Validator(schema, format_checker=_FORMATS), fast

    def errors(self, schema: Mapping[str, Any], instance: Any) -> list[InvalidField]:
        compiled = self._compiled.get(id(schema))
        if compiled is None or compiled[0] is not schema:
            compiled = (schema, *self._validators(json.dumps(schema, sort_keys=True)))
            self._compiled[id(schema)] = compiled
        _schema, validator, fast = compiled
        # The compiled (Rust) validator answers "valid?" fast; on "no", the Python one names
        # every error. A request is rejected only on the Python validator's word.
        if fast is not None and fast.is_valid(instance):
            return []
        found = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path)))
        return [_schema_error(e) for e in found]

    def resolve(self, item: Mapping[str, Any]) -> Mapping[str, Any]:
        """A parameter or response of the document, its local ``$ref`` followed."""
        ref = item.get("$ref")
        if not ref:
            return item
        node: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    def parameters(self, operation: Operation, where: str) -> list[Mapping[str, Any]]:
        known = self._parameters.get((operation.operation_id, where))
        if known is None:
            found = (self.resolve(p) for p in operation.parameters)
            known = [p for p in found if p["in"] == where]
            self._parameters[(operation.operation_id, where)] = known
        return known

    def check_parameters(
        self, operation: Operation, where: str, raw: Mapping[str, str]
    ) -> tuple[dict[str, Any], list[InvalidField]]:
        """Path or query parameters, converted to their types; errors name the parameter."""
        values: dict[str, Any] = {}
        errors: list[InvalidField] = []
        for parameter in self.parameters(operation, where):
            name, schema = parameter["name"], parameter["schema"]
            if name not in raw:
                if parameter.get("required"):
                    errors.append(InvalidField(name, None, "is required", "required"))
                elif "default" in schema:
                    values[name] = schema["default"]
                continue
            value: Any = raw[name]
            if schema.get("type") == "integer":
                try:
                    value = int(value)
                except ValueError:
                    errors.append(InvalidField(name, value, "is not a whole number", "type"))
                    continue
            problems = self.errors(schema, value)
            errors.extend(InvalidField(name, value, p.reason, p.code) for p in problems)
            values[name] = value
        return values, errors

    def response_schema(
        self, operation: Operation, status: int, content_type: str
    ) -> Mapping[str, Any] | None:
        response = operation.responses.get(str(status)) or operation.responses.get("default")
        if response is None:
            raise ResponseDrift(f"{operation.operation_id}: status {status} is not documented")
        response = self.resolve(response)
        content = response.get("content")
        if not content:
            return None
        if content_type not in content:
            raise ResponseDrift(
                f"{operation.operation_id}: {status} {content_type} is not documented"
            )
        return content[content_type]["schema"]

    def check_response(
        self, operation: Operation, status: int, content_type: str, body: Any
    ) -> None:
        schema = self.response_schema(operation, status, content_type)
        if schema is None:
            if body is not None:
                raise ResponseDrift(f"{operation.operation_id}: {status} documents no body")
            return
        problems = self.errors(schema, body)
        if problems:
            shown = "; ".join(f"{p.field} {p.reason}" for p in problems[:5])
            raise ResponseDrift(f"{operation.operation_id} {status}: {shown}")
