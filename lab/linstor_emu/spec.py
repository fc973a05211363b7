"""What a LINSTOR release accepts and answers on its REST API, read from its own OpenAPI document.

`lab/data/openapi/` holds linstor-server's `docs/rest_v1_openapi.yaml` at every release tag from
v1.19.0 to v1.34.0-rc.1 (xz-compressed, one file per distinct content) and `releases.tsv`
(release, the REST API version that document states, the file). From them, per release:

- **The REST API version** the controller reports (JsonGenTypes.REST_API_VERSION, generated from the
  same document: equal at every tag checked).
- **The routes it has**: the document's paths and methods, corrected where the document disagrees
  with the controller's REST classes (ERRATA; checked by listing every `@Path`/`@GET`/... of
  `controller/src/main/java/com/linbit/linstor/api/rest/v1/` at the tags). A path it does not have
  answers 404 "Path ... not found on server.", a method it does not have on a path 405
  (GrizzlyHttpService.LinstorMapper: NotFoundException / NotAllowedException, no error report).
- **How it reads a request body**: every REST class parses with a plain Jackson `new ObjectMapper()`
  into the generated JsonGenTypes classes, which carry no `@JsonIgnoreProperties`, so a field the
  release does not know is refused (UnrecognizedPropertyException); so is a value Jackson cannot
  coerce (an object or a list where a scalar is due, a scalar where a list or an object is due, a
  non-numeric string for a number). Scalars are coerced as Jackson does by default (a number for a
  string, "12" for a number, "true" for a boolean). The field names of every component schema
  equal those of the JsonGenTypes class at v1.20.0, v1.26.2, v1.31.0, v1.33.2 and v1.34.0-rc.1.
  The refusal: API_CALL_PARSE_ERROR "Unable to parse input json.", Jackson's message as details,
  with the status the handler gives it (PARSE_ERROR_STATUS).
- **What its answers may contain**: responses are cut to the fields the release's schemas have
  (an older controller's serializer does not know newer fields) and checked against them.
"""
from __future__ import annotations

import lzma
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

SPEC_DIR = Path(__file__).resolve().parents[1] / "data" / "openapi"
JAVA_TYPES = "com.linbit.linstor.api.rest.v1.serializer.JsonGenTypes$"

# Where a release's document and its controller disagree: the controller's routes win.
# (method, documented path) -> (method, routed path)
ERRATA = {
    # spec 1.18.0-1.20.1 (LINSTOR 1.22.0-1.24.2) documents /v1/action/...; Actions.java has
    # @Path("v1/actions") at every tag (python-linstor posts to /v1/actions/snapshot/multi)
    ("POST", "/v1/action/snapshot/multi"): ("POST", "/v1/actions/snapshot/multi"),
    # spec 1.17.0 of LINSTOR 1.21.0 documents GET; ResourceGroups.querySizeInfo is @POST there
    ("GET", "/v1/resource-groups/{}/query-size-info"): ("POST", "/v1/resource-groups/{}/query-size-info"),
}

# How a handler answers a body it cannot parse (the REST classes at v1.20.0 ... v1.34.0-rc.1, the
# same at every tag for these routes): "400" = catch IOException -> ApiCallRcRestUtils.
# handleJsonParseException (no error report); "400r" = RequestHelper.doInScope (with an error
# report); "500r" = not caught in the handler: LinstorMapper, 500 with an error report.
PARSE_ERROR_STATUS = {
    ("POST", "/v1/resource-definitions"): "400r",
    ("PUT", "/v1/resource-definitions/{}"): "500r",
    ("POST", "/v1/resource-definitions/{}/clone"): "500r",
    ("PUT", "/v1/resource-definitions/{}/resources/{}"): "500r",
    ("PUT", "/v1/resource-definitions/{}/resource-connections/{}/{}"): "500r",
    ("PUT", "/v1/resource-definitions/{}/snapshots/{}"): "500r",
    ("POST", "/v1/resource-definitions/{}/snapshot-restore-volume-definition/{}"): "400r",
    ("POST", "/v1/resource-groups"): "400r",
    ("PUT", "/v1/resource-groups/{}"): "500r",
    ("POST", "/v1/resource-groups/{}/volume-groups"): "400r",
    ("POST", "/v1/resource-groups/{}/query-size-info"): "500r",
}


def parse_release(version: str) -> tuple[int, int, int, int]:
    """Orderable: 1.34.0-rc.1 < 1.34.0 (a release candidate comes before its release)."""
    nums = [int(x) for x in re.findall(r"\d+", version.split("-")[0])[:3]]
    nums += [0] * (3 - len(nums))
    rc = re.search(r"rc\.?(\d+)", version)
    return nums[0], nums[1], nums[2], int(rc.group(1)) - 1000 if rc else 0


@lru_cache(maxsize=1)
def _releases() -> list[tuple[str, str, str]]:
    out = []
    for line in (SPEC_DIR / "releases.tsv").read_text().splitlines():
        if line.strip():
            release, rest, name = line.split("\t")
            out.append((release, rest, name))
    return sorted(out, key=lambda r: parse_release(r[0]))


def releases() -> list[str]:
    return [r for r, _, _ in _releases()]


def _entry(version: str) -> tuple[str, str, str]:
    """The listed release `version` is, or the newest listed one before it (1.34.0: 1.34.0-rc.1's)."""
    want = parse_release(version)
    found = None
    for entry in _releases():
        if parse_release(entry[0]) <= want:
            found = entry
    if found is None:
        raise ValueError(f"LINSTOR {version}: no REST API document for it or any release before it")
    return found


def rest_api_version(version: str) -> str:
    return _entry(version)[1]


def _norm(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", template.rstrip("/") or "/")


@dataclass
class Route:
    method: str
    template: str          # normalised: every path parameter is {}
    operation: dict


class ReleaseSpec:
    def __init__(self, version: str):
        self.release, self.rest_version, name = _entry(version)
        self.spec = _load(name)
        self.schemas = self.spec["components"]["schemas"]
        self._shapers: dict[int, Callable[[Any], Any]] = {}
        self.newest = name == _releases()[-1][2]
        self.routes: dict[tuple[str, str], Route] = {}
        for template, item in self.spec["paths"].items():
            for method, op in item.items():
                if method not in ("get", "post", "put", "delete", "patch"):
                    continue
                key = ERRATA.get((method.upper(), _norm(template)), (method.upper(), _norm(template)))
                self.routes[key] = Route(key[0], key[1], op)
        self._rx = sorted(((t.count("{}"), t, re.compile("^" + re.escape(t).replace(r"\{\}", "[^/]+") + "$"))
                           for t in {t for _, t in self.routes}), key=lambda x: (x[0], x[1]))

    # ---- routes ----------------------------------------------------------------------------------
    def template_of(self, path: str) -> Optional[str]:
        for _, template, rx in self._rx:
            if rx.match(path):
                return template
        return None

    def has(self, method: str, template: str) -> bool:
        return (method, _norm(template)) in self.routes

    def route(self, method: str, path: str) -> tuple[Optional[Route], bool]:
        """(the route, True) / (None, True: the path exists with other methods) / (None, False)."""
        template = self.template_of(path)
        if template is None:
            return None, False
        return self.routes.get((method, template)), True

    # ---- request bodies --------------------------------------------------------------------------
    def read_body(self, route: Route, raw: bytes) -> tuple[Optional[str], Any]:
        """(Jackson's complaint about this body or None, the body as the handler sees it: scalars
        coerced the way Jackson coerces them)."""
        import json
        try:
            value = json.loads(raw) if raw.strip() else None
        except ValueError as err:
            return f"Unexpected character: {err}", None
        body_spec = route.operation.get("requestBody")
        if body_spec is None:
            return None, value                 # the handler has no body parameter: not read
        if "$ref" in body_spec:
            body_spec = self.spec["components"]["requestBodies"][body_spec["$ref"].rsplit("/", 1)[1]]
        schema = ((body_spec.get("content") or {}).get("application/json") or {}).get("schema")
        if schema is None:
            return None, value
        if value is None and not raw.strip():
            return ("No content to map due to end-of-input" if body_spec.get("required") else None), None
        return self._read(schema, value, "", self._java_name(schema, "java.lang.Object"))

    def _resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[1]]
        if "allOf" in schema:
            merged: dict = {"type": "object", "properties": {}}
            for part in schema["allOf"]:
                part = self._resolve(part)
                merged["properties"].update(part.get("properties") or {})
                if "additionalProperties" in part:
                    merged["additionalProperties"] = part["additionalProperties"]
            merged["properties"].update(schema.get("properties") or {})
            return merged
        return schema

    @staticmethod
    def _java_name(schema: dict, fallback: str) -> str:
        ref = schema.get("$ref")
        return JAVA_TYPES + ref.rsplit("/", 1)[1] if ref else fallback

    def _read(self, schema: dict, value: Any, chain: str, java: str) -> tuple[Optional[str], Any]:
        s = self._resolve(schema)
        if value is None or "anyOf" in s or "oneOf" in s:
            return None, value
        kind = s.get("type") or ("object" if "properties" in s or "additionalProperties" in s else None)
        where = f" (through reference chain: {chain.rstrip('->')})" if chain else ""
        if kind == "object":
            if not isinstance(value, dict):
                return (f"Cannot construct instance of `{java}`: no {_json_kind(value)}-argument constructor"
                        + where), None
            props = s.get("properties")
            out = {}
            if props is not None and "additionalProperties" not in s:
                for key in value:
                    if key not in props:
                        known = ", ".join(f'"{k}"' for k in props)
                        return (f'Unrecognized field "{key}" (class {java}), not marked as ignorable '
                                f"({len(props)} known properties: {known}]) (through reference chain: "
                                f'{chain}{java}["{key}"])'), None
                    problem, out[key] = self._read(props[key], value[key], f'{chain}{java}["{key}"]->',
                                                   self._java_name(props[key], "java.lang.Object"))
                    if problem:
                        return problem, None
                return None, out
            extra = s.get("additionalProperties")
            if not isinstance(extra, dict):
                return None, value
            for key, item in value.items():
                problem, out[key] = self._read(extra, item, f'{chain}java.util.Map["{key}"]->',
                                               self._java_name(extra, "java.lang.String"))
                if problem:
                    return problem, None
            return None, out
        if kind == "array":
            if not isinstance(value, list):
                return f"Cannot deserialize value of type `java.util.ArrayList` from {_json_kind(value)} value" + where, None
            items = s.get("items") or {}
            out_list = []
            for i, item in enumerate(value):
                problem, got = self._read(items, item, f"{chain}java.util.ArrayList[{i}]->",
                                          self._java_name(items, "java.lang.Object"))
                if problem:
                    return problem, None
                out_list.append(got)
            return None, out_list
        java_type = {"string": "java.lang.String", "integer": "java.lang.Long", "number": "java.lang.Double",
                     "boolean": "java.lang.Boolean"}.get(kind or "")
        if java_type is None:
            return None, value
        if isinstance(value, (dict, list)):
            return f"Cannot deserialize value of type `{java_type}` from {_json_kind(value)} value" + where, None
        if kind == "string":
            return None, value if isinstance(value, str) else json_scalar(value)
        if kind in ("integer", "number"):
            if isinstance(value, bool):
                return f"Cannot coerce Boolean value ({json_scalar(value)}) to `{java_type}` value" + where, None
            if isinstance(value, str):
                text = value.strip()
                if not re.fullmatch(r"-?\d+(\.\d+)?", text):
                    return (f"Cannot deserialize value of type `{java_type}` from String {value!r}: not a valid "
                            "representation" + where), None
                number = float(text)
                return None, int(number) if kind == "integer" else number
            return None, int(value) if kind == "integer" else value
        if isinstance(value, str):                                  # boolean
            text = value.strip().lower()
            if text not in ("true", "false"):
                return f"Cannot deserialize value of type `java.lang.Boolean` from String {value!r}" + where, None
            return None, text == "true"
        return None, bool(value)

    # ---- responses -------------------------------------------------------------------------------
    def response_schema(self, route: Route, status: int) -> Optional[dict]:
        responses = route.operation.get("responses", {})
        resp = responses.get(str(status)) or responses.get("default")
        if resp is None:
            return {"$ref": "#/components/schemas/ApiCallRcList"} if status >= 400 else None
        while "$ref" in resp and resp["$ref"].startswith("#/components/responses/"):
            name = resp["$ref"].rsplit("/", 1)[1]
            # `OperationFailed` documents one ApiCallRc; the controller always sends the list
            # (ApiCallRcRestUtils serialises the whole ApiCallRc collection), which python-linstor iterates
            resp = self.spec["components"]["responses"]["InvalidInput" if name == "OperationFailed" else name]
        content = (resp.get("content") or {}).get("application/json")
        if content is None:
            return {"$ref": "#/components/schemas/ApiCallRcList"} if status >= 400 else None
        return content.get("schema")

    def shape(self, schema: Optional[dict], value: Any) -> Any:
        """`value` with only the fields the release's schema has (what its serializer writes). The
        emulator writes the newest document's fields: for the newest release nothing is cut."""
        if schema is None or value is None or self.newest:
            return value
        return self._shaper(schema)(value)

    def _shaper(self, schema: dict) -> Callable[[Any], Any]:
        """A function cutting a value to `schema`, compiled once per schema (listings of tens of
        thousands of resources go through it)."""
        key = id(schema)
        found = self._shapers.get(key)
        if found is not None:
            return found
        cell: list = []
        self._shapers[key] = lambda v: cell[0](v)          # (a schema may contain itself)
        s = self._resolve(schema)
        fn: Callable[[Any], Any] = _same
        if "anyOf" not in s and "oneOf" not in s:
            if s.get("type") == "array" and s.get("items"):
                item = self._shaper(s["items"])
                if item is not _same:
                    fn = lambda v, item=item: [item(x) for x in v] if isinstance(v, list) else v  # noqa: E731
            elif s.get("properties") is not None:
                subs = {k: self._shaper(sub) for k, sub in s["properties"].items()}
                deep = {k: f for k, f in subs.items() if f is not _same}
                allowed = frozenset(subs)

                def fn(v, allowed=allowed, deep=deep):
                    if not isinstance(v, dict):
                        return v
                    return {k: (deep[k](x) if k in deep else x) for k, x in v.items() if k in allowed}
            elif isinstance(s.get("additionalProperties"), dict):
                inner = self._shaper(s["additionalProperties"])
                if inner is not _same:
                    fn = lambda v, inner=inner: {k: inner(x) for k, x in v.items()} if isinstance(v, dict) else v  # noqa: E731,E501
        cell.append(fn)
        self._shapers[key] = fn
        return fn


def _same(value: Any) -> Any:
    return value


def json_scalar(value: Any) -> str:
    """A JSON scalar as the string Jackson makes of it."""
    return "true" if value is True else "false" if value is False else str(value)


def _json_kind(value: Any) -> str:
    return {dict: "Object", list: "Array", str: "String", bool: "Boolean", type(None): "Null"}.get(
        type(value), "Number")


@lru_cache(maxsize=None)
def _load(name: str) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with lzma.open(SPEC_DIR / (name + ".xz"), "rt") as f:
        spec = yaml.load(f, Loader=loader)
    _relax_one_of(spec)
    return spec


def _relax_one_of(node: Any) -> None:
    """Read `oneOf` without a discriminator as `anyOf`: the document lists layer-data variants
    (DrbdVolume, StorageVolume, ...) under `oneOf` with overlapping optional fields, so a real
    controller's answer is valid under several of them and a strict `oneOf` would reject it."""
    if isinstance(node, dict):
        if "oneOf" in node and "discriminator" not in node:
            node["anyOf"] = node.pop("oneOf")
        for value in node.values():
            _relax_one_of(value)
    elif isinstance(node, list):
        for value in node:
            _relax_one_of(value)


@lru_cache(maxsize=None)
def release_spec(version: str) -> ReleaseSpec:
    return ReleaseSpec(version)
