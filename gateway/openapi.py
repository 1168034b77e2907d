"""Generate the OpenAPI 3 document of the REST API from the descriptor set's google.api.http rules."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway import api_rules
from gateway.api_rules import ApiLimits, error_responses

F = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # proto3 JSON writes 64-bit integers as strings of digits (and accepts numbers); "" is refused
    F.TYPE_INT64: {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,19}$"},
    F.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,19}$"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,19}$"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": r"^[0-9]{1,20}$"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": r"^[0-9]{1,20}$"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    ".google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}},
                             "additionalProperties": True},
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
}
# Well-known types documented once, as a component of their own: the typed feature value (the contract refuses
# lists and objects, so the document admits what is accepted).
_WELL_KNOWN_COMPONENTS: dict[str, dict[str, Any]] = {
    ".google.protobuf.Value": {
        "description": "Any JSON value of number/string/boolean/null (google.protobuf.Value): a number for a "
                       "numeric feature, a string for a categorical one, true or false for a boolean, null for a "
                       "missing value.",
        "nullable": True, "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]},
}
_VERBS = ("get", "put", "post", "delete", "patch")
_VARIABLE = re.compile(r"\{([a-zA-Z0-9_.]+)(=[^}]*)?\}")


class _Contract:
    """Messages, enums and comments of a FileDescriptorSet, by fully qualified name."""

    def __init__(self, fds: descriptor_pb2.FileDescriptorSet):
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[tuple, str] = {}
        self.paths: dict[str, tuple] = {}
        self.files = list(fds.file)
        for file in self.files:
            prefix = f".{file.package}" if file.package else ""
            for i, enum in enumerate(file.enum_type):
                self.enums[f"{prefix}.{enum.name}"] = enum
                self.paths[f"{prefix}.{enum.name}"] = (file.name, 5, i)
            for i, message in enumerate(file.message_type):
                self._add_message(prefix, message, (file.name, 4, i))
            for loc in file.source_code_info.location:
                if loc.leading_comments.strip():
                    self.comments[(file.name, *loc.path)] = " ".join(loc.leading_comments.split())

    def _add_message(self, prefix: str, message, path: tuple) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = message
        self.paths[name] = path
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = enum
            self.paths[f"{name}.{enum.name}"] = (*path, 4, i)
        for i, nested in enumerate(message.nested_type):
            self._add_message(name, nested, (*path, 3, i))

    def comment(self, key: tuple) -> str | None:
        return self.comments.get(key)


class _Builder:
    def __init__(self, contract: _Contract, limits: ApiLimits):
        self.c = contract
        self.schemas: dict[str, dict] = {}
        self.rules = api_rules.field_rules(limits)

    def constrained(self, type_name: str, field, schema: dict, doc: str | None) -> dict:
        """A field's schema with the bounds the server enforces on it and its comment as the description."""
        rule = dict(self.rules.get(f"{type_name.lstrip('.')}.{field.name}", {}))
        extra = rule.pop("description", None)
        doc = " ".join(d for d in (doc, extra) if d) or None
        if rule:
            schema = {**schema, **rule} if "$ref" not in schema else {"allOf": [schema], **rule}
        if doc:
            schema = {**schema, "description": doc} if "$ref" not in schema else {"allOf": [schema],
                                                                                   "description": doc}
        return schema

    def ref(self, type_name: str) -> dict:
        """A $ref to the schema of a message, building it (and what it references) on first use."""
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        key = type_name.lstrip(".")
        if type_name in _WELL_KNOWN_COMPONENTS:
            self.schemas[key] = dict(_WELL_KNOWN_COMPONENTS[type_name])
            return {"$ref": f"#/components/schemas/{key}"}
        if key not in self.schemas:
            self.schemas[key] = {}  # placeholder: recursion-safe
            self.schemas[key] = self.message_schema(type_name)
        return {"$ref": f"#/components/schemas/{key}"}

    def enum_ref(self, type_name: str) -> dict:
        """A $ref to the schema of an enum (its value names, as answers carry them, and its comment)."""
        key = type_name.lstrip(".")
        if key not in self.schemas:
            schema: dict[str, Any] = {"type": "string", "enum": _enum_names(self.c.enums[type_name])}
            doc = self.c.comment(self.c.paths[type_name])
            if doc:
                schema["description"] = doc
            self.schemas[key] = schema
        return {"$ref": f"#/components/schemas/{key}"}

    def message_schema(self, type_name: str, exclude: frozenset[str] = frozenset()) -> dict:
        message = self.c.messages[type_name]
        path = self.c.paths[type_name]
        props = {}
        for i, field in enumerate(message.field):
            if field.name in exclude:
                continue
            props[field.name] = self.constrained(type_name, field, self.field_schema(field),
                                                 self.c.comment((*path, 2, i)))
        schema: dict[str, Any] = {"type": "object", "properties": props}
        key = type_name.lstrip(".")
        required = [f for f in api_rules.REQUIRED.get(key, []) if f not in exclude]
        if required:
            schema["required"] = required
        notes = [self.c.comment(path)]
        oneofs = _oneofs(message, exclude)
        if oneofs:  # a proto oneof: JSON carries exactly one of its fields (answers always set one)
            choices = [{"oneOf": [{"required": [name]} for name in group]} for group in oneofs]
            schema.update(choices[0] if len(choices) == 1 else {"allOf": choices})
            notes += [f"Exactly one of {', '.join(group)}." for group in oneofs]
        either = api_rules.EITHER.get(key)
        if either:
            schema["oneOf"] = either["oneOf"]
            notes.append(either["description"])
        doc = " ".join(n for n in notes if n)
        if doc:
            schema["description"] = doc
        return schema

    def field_schema(self, field) -> dict:
        if field.type == F.TYPE_MESSAGE:
            entry = self.c.messages.get(field.type_name)
            if entry is not None and entry.options.map_entry:
                value = next(f for f in entry.field if f.name == "value")
                return {"type": "object", "additionalProperties": self.field_schema(value)}
            item = self.ref(field.type_name)
        elif field.type == F.TYPE_ENUM:
            item = self.enum_ref(field.type_name)
        else:
            item = dict(_SCALARS[field.type])
        if field.label == F.LABEL_REPEATED:
            return {"type": "array", "items": item}
        return item

    def query_parameters(self, type_name: str, exclude: set[str]) -> list[dict]:
        """Every non-path field of a GET request becomes a query parameter (messages other than WKTs skipped)."""
        params = []
        message = self.c.messages[type_name]
        for i, field in enumerate(message.field):
            if field.name in exclude:
                continue
            if field.type == F.TYPE_MESSAGE and field.type_name not in _WELL_KNOWN:
                continue
            schema: dict[str, Any]
            if field.type == F.TYPE_ENUM:  # the gateway parses enum names in any case: aliases as written in docs;
                enum = self.c.enums[field.type_name]  # and, as proto3 JSON does, the numbers
                numbers = sorted({str(v.number) for v in enum.value}, key=int)
                schema = {"type": "string", "enum": _enum_names(enum, aliases=True) + numbers}
                if field.label == F.LABEL_REPEATED:
                    schema = {"type": "array", "items": schema}
            else:
                schema = self.field_schema(field)
            doc = self.c.comment((*self.c.paths[type_name], 2, i))
            schema = self.constrained(type_name, field, schema, None)
            param: dict[str, Any] = {"name": field.name, "in": "query", "required": False, "schema": schema}
            if field.label == F.LABEL_REPEATED:
                param.update(style="form", explode=True)
            if doc:
                param["description"] = doc
            params.append(param)
        return params


def _enum_names(enum, aliases: bool = False) -> list[str]:
    """An enum's value names as answers carry them (the first name of each number); with aliases, the other
    names of a number too, lower-case (Transport's REST alias → "rest", which the gateway takes in any case)."""
    seen: set[int] = set()
    names: list[str] = []
    others: list[str] = []
    for value in enum.value:
        (others if value.number in seen else names).append(value.name)
        seen.add(value.number)
    return names + ([n.lower() for n in others] if aliases else [])


def _oneofs(message, exclude: frozenset[str]) -> list[list[str]]:
    """The field names of each real oneof of a message (not proto3 `optional`, which is a synthetic oneof)."""
    groups: dict[int, list[str]] = {}
    for field in message.field:
        if field.HasField("oneof_index") and not field.proto3_optional and field.name not in exclude:
            groups.setdefault(field.oneof_index, []).append(field.name)
    return [g for _, g in sorted(groups.items()) if len(g) > 1]


def _rules(rule) -> list[tuple[str, str, str]]:
    """(verb, path template, body) of an HttpRule and its additional_bindings."""
    out = []
    for r in (rule, *rule.additional_bindings):
        verb = r.WhichOneof("pattern")
        if verb in _VERBS:
            out.append((verb, getattr(r, verb), r.body))
    return out


def generate(descriptor_set: bytes, services: tuple[str, ...], *, title: str, version: str = "v1",
             server_url: str | None = None, limits: ApiLimits | None = None) -> dict:
    """The OpenAPI 3.0 document for the google.api.http-annotated RPCs of the named services, with the bounds,
    credentials and error answers (the server's and Envoy's own) of each operation (gateway/api_rules.py)."""
    limits = limits or ApiLimits()
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    contract = _Contract(fds)
    b = _Builder(contract, limits)
    b.schemas["google.rpc.Status"] = {
        "type": "object", "description": "The error body (google.rpc.Status) of a failed call.",
        "properties": {"code": {"type": "integer", "format": "int32", "description": "gRPC status code"},
                       "message": {"type": "string", "description": "Developer-facing error message"},
                       "details": {"type": "array", "items": {"type": "object"}}}}
    paths: dict[str, dict] = {}
    tags = []
    secured = False
    for file in contract.files:
        for si, service in enumerate(file.service):
            full = f"{file.package}.{service.name}"
            if full not in services:
                continue
            tags.append({"name": service.name, "description": contract.comment((file.name, 6, si)) or ""})
            for mi, method in enumerate(service.method):
                if method.client_streaming or method.server_streaming:
                    continue
                rpc_name = f"{full}.{method.name}"
                auth = rpc_name in api_rules.WRITE_METHODS or full in api_rules.AUTH_SERVICES
                secured |= auth
                rule = method.options.Extensions[annotations_pb2.http]
                for n, (verb, template, body) in enumerate(_rules(rule)):
                    path = _VARIABLE.sub(lambda m: "{" + m.group(1) + "}", template)
                    path_fields = [m.group(1) for m in _VARIABLE.finditer(template)]
                    op: dict[str, Any] = {
                        "operationId": f"{service.name}_{method.name}" + (f"_{n}" if n else ""),
                        "tags": [service.name],
                        "summary": contract.comment((file.name, 6, si, 2, mi)) or method.name,
                        "description": f"gRPC: `/{full}/{method.name}`"
                        + (" Needs a bearer token (see the security scheme)." if auth else ""),
                        "parameters": [{"name": f, "in": "path", "required": True,
                                        "schema": dict(api_rules.PATH_RULES.get(f, {"type": "string"}))}
                                       for f in path_fields],
                        "responses": {
                            "200": {"description": "OK", "content": {"application/json": {
                                "schema": b.ref(method.output_type)}}},
                            **error_responses(limits, has_body=bool(body), auth=auth,
                                              keyed=rpc_name in api_rules.KEYED_METHODS),
                        },
                    }
                    if auth:
                        op["security"] = [{api_rules.BEARER: []}]
                    if body == "*":
                        op["requestBody"] = {"required": True, "content": {"application/json": {
                            "schema": b.message_schema(method.input_type, frozenset(path_fields))}}}
                    elif body:
                        field = next(f for f in contract.messages[method.input_type].field if f.name == body)
                        op["requestBody"] = {"required": True, "content": {"application/json": {
                            "schema": b.field_schema(field)}}}
                    else:
                        op["parameters"] += b.query_parameters(method.input_type, set(path_fields))
                    paths.setdefault(path, {})[verb] = op
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version,
                 "description": "Generated from the predmesh.v1 protos (google.api.http annotations); "
                                "served by Envoy's gRPC-JSON transcoder. Field names are the proto names. Errors "
                                "are google.rpc.Status JSON when the server answers them, and one text/plain line "
                                "when Envoy does (before or instead of the server): each operation lists both. "
                                "Unknown fields in a JSON body are ignored; unknown query parameters are refused."},
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(b.schemas.items())),
                       **({"securitySchemes": dict(api_rules.SECURITY_SCHEMES)} if secured else {})},
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def write_openapi(descriptor_path: Path, out: Path, services: tuple[str, ...], **kwargs) -> Path:
    """Generate the document from a descriptor set file and write it as JSON to out."""
    doc = generate(descriptor_path.read_bytes(), services, **kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    return out
