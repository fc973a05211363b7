"""Checks the emulator's responses against LINSTOR's official OpenAPI document.

Each response is matched to its path template and status; its JSON body must validate against the
schema the document gives for that status (an error status the document leaves out must still be
an ApiCallRc list, which is what LINSTOR sends). A path or method the document does not have is a
violation too: the emulator must not invent endpoints.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import yaml
from openapi_schema_validator import OAS30Validator

DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "data" / "rest_v1_openapi.yaml"


def _relax_one_of(node: Any) -> None:
    """Read `oneOf` without a discriminator as `anyOf`.

    The document lists layer-data variants (DrbdVolume, StorageVolume, ...) under `oneOf` with no
    discriminator; their fields overlap and none is required, so a real controller's response is
    valid under several of them and a strict `oneOf` would reject every real answer.
    """
    if isinstance(node, dict):
        if "oneOf" in node and "discriminator" not in node:
            node["anyOf"] = node.pop("oneOf")
        for value in node.values():
            _relax_one_of(value)
    elif isinstance(node, list):
        for value in node:
            _relax_one_of(value)


class SchemaChecker:
    def __init__(self, spec_path: Path = DEFAULT_SPEC):
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(spec_path) as f:
            self.spec = yaml.load(f, Loader=loader)
        _relax_one_of(self.spec)
        templates = []
        for template in self.spec["paths"]:
            rx = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
            templates.append((template.count("{"), template, rx))
        templates.sort()
        self.templates = [(t, rx) for _, t, rx in templates]

    def find_operation(self, method: str, path: str) -> tuple[Optional[str], Optional[dict]]:
        for template, rx in self.templates:
            if rx.match(path):
                op = self.spec["paths"][template].get(method.lower())
                if op is not None:
                    return template, op
        return None, None

    def _deref(self, node: dict) -> dict:
        # `OperationFailed` documents a single ApiCallRc, but the controller always sends a list
        # (ApiCallRcRestUtils serialises the whole ApiCallRc collection) and python-linstor
        # iterates it; the list is what a client must cope with, so that is what is checked.
        if isinstance(node, dict) and node.get("$ref") == "#/components/responses/OperationFailed":
            return self.spec["components"]["responses"]["InvalidInput"]
        while isinstance(node, dict) and "$ref" in node and node["$ref"].startswith("#/components/responses/"):
            node = self.spec["components"]["responses"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def response_schema(self, op: dict, status: int) -> Optional[dict]:
        responses = op.get("responses", {})
        resp = responses.get(str(status)) or responses.get("default")
        if resp is None:
            if status >= 400:
                return {"$ref": "#/components/schemas/ApiCallRcList"}
            return None
        resp = self._deref(resp)
        content = (resp.get("content") or {}).get("application/json")
        if content is None:
            return {"$ref": "#/components/schemas/ApiCallRcList"} if status >= 400 else None
        return content.get("schema")

    def check(self, method: str, path: str, status: int, body: Any) -> list[str]:
        """Return a list of problems (empty when the response fits the document)."""
        template, op = self.find_operation(method, path)
        if op is None:
            return [f"{method} {path}: not in the LINSTOR REST API document"]
        schema = self.response_schema(op, status)
        if schema is None:
            documented = sorted(op.get("responses", {}))
            return [f"{method} {template}: status {status} is not documented (documented: {documented})"]
        # local "#/components/..." references resolve against the document root
        validator = OAS30Validator({**schema, "components": self.spec["components"]})
        return [f"{method} {template} {status}: {'/'.join(str(p) for p in err.absolute_path)}: {err.message}"
                for err in validator.iter_errors(body)]


@lru_cache(maxsize=1)
def default_checker() -> SchemaChecker:
    return SchemaChecker()
