"""Checks the emulator's responses against the REST API document of the release it plays.

Each response is matched to its route and status; its JSON body must validate against the schema
the document gives for that status (an error status the document leaves out must still be an
ApiCallRc list, which is what LINSTOR sends). A path or method the release does not have is a
violation too: the emulator must not invent endpoints.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

from openapi_schema_validator import OAS30Validator

from .spec import ReleaseSpec, release_spec, releases


class SchemaChecker:
    def __init__(self, release: Optional[str] = None):
        self.spec: ReleaseSpec = release_spec(release or releases()[-1])

    def check(self, method: str, path: str, status: int, body: Any) -> list[str]:
        """Return a list of problems (empty when the response fits the document)."""
        route, _ = self.spec.route(method, path)
        if route is None:
            return [f"{method} {path}: not in the LINSTOR {self.spec.release} REST API document"]
        schema = self.spec.response_schema(route, status)
        if schema is None:
            documented = sorted(route.operation.get("responses", {}))
            return [f"{method} {route.template}: status {status} is not documented (documented: {documented})"]
        # local "#/components/..." references resolve against the document root
        validator = OAS30Validator({**schema, "components": self.spec.spec["components"]})
        return [f"{method} {route.template} {status}: {'/'.join(str(p) for p in err.absolute_path)}: {err.message}"
                for err in validator.iter_errors(body)]


@lru_cache(maxsize=None)
def checker(release: str) -> SchemaChecker:
    return SchemaChecker(release)
