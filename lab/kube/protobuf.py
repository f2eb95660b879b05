"""Decoding of the Kubernetes protobuf envelope, for the request bodies that kubectl and helm send.

client-go (1.32 and later) writes some typed objects as ``application/vnd.kubernetes.protobuf``:
helm stores its releases as Secrets that way, and ``kubectl create`` sends Secrets, ConfigMaps and
Namespaces so. kmock parses JSON only, so :func:`install` makes it see such a body as the equivalent
JSON object. Only the fields those clients send are decoded (metadata, Secret and ConfigMap data);
any other kind fails loudly rather than being stored wrong.

Field numbers are those of k8s.io/api/core/v1/generated.proto and
k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto.
"""

from __future__ import annotations

import base64

MAGIC = b"k8s\x00"
_META_STRINGS = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
# map fields by kind: field number -> (JSON name, values are bytes to base64-encode)
DATA_FIELDS = {
    "Secret": {2: ("data", True), 4: ("stringData", False)},
    "ConfigMap": {2: ("data", False), 3: ("binaryData", True)},
}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def _fields(buf: bytes):
    """Yield (field number, value) for each field of a protobuf message; value is bytes or int."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, i = _varint(buf, i)
        elif wire_type == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire_type == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire_type == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield field, value


def _string_map(entries: list[bytes], binary: bool = False) -> dict[str, str]:
    out = {}
    for entry in entries:
        kv = dict(_fields(entry))
        value = kv.get(2, b"")
        out[kv.get(1, b"").decode()] = base64.b64encode(value).decode() if binary else value.decode()
    return out


def _object_meta(buf: bytes) -> dict:
    meta: dict = {}
    labels, annotations, finalizers = [], [], []
    for field, value in _fields(buf):
        if field in _META_STRINGS:
            meta[_META_STRINGS[field]] = value.decode()
        elif field == 11:
            labels.append(value)
        elif field == 12:
            annotations.append(value)
        elif field == 14:
            finalizers.append(value.decode())
    if labels:
        meta["labels"] = _string_map(labels)
    if annotations:
        meta["annotations"] = _string_map(annotations)
    if finalizers:
        meta["finalizers"] = finalizers
    return {k: v for k, v in meta.items() if v != ""}


def decode(body: bytes) -> dict:
    """The JSON form of a protobuf-encoded Secret, ConfigMap, Namespace or DeleteOptions."""
    if body[:4] != MAGIC:
        raise ValueError("not a Kubernetes protobuf body")
    envelope = dict(_fields(body[4:]))
    type_meta = dict(_fields(envelope[1]))
    kind = type_meta[2].decode()
    obj: dict = {"apiVersion": type_meta[1].decode(), "kind": kind}
    maps: dict[int, list[bytes]] = {}
    for field, value in _fields(envelope[2]):
        if field == 1:
            obj["metadata"] = _object_meta(value)
        elif kind == "Secret" and field == 3:
            obj["type"] = value.decode()
        elif isinstance(value, bytes) and field in (2, 3, 4):
            maps.setdefault(field, []).append(value)
        elif field in (4, 5):
            obj["immutable"] = bool(value)
    if kind not in DATA_FIELDS and kind not in ("Namespace", "DeleteOptions"):  # metadata is all these need
        raise ValueError(f"protobuf body for {kind} is not supported by the lab emulator")
    for number, (name, binary) in DATA_FIELDS.get(kind, {}).items():
        if number in maps:
            obj[name] = _string_map(maps[number], binary=binary)
    return obj


class _DecodedRequest:
    """Presents a protobuf request to kmock as the JSON request it stands for."""

    def __init__(self, raw, obj: dict):
        self._raw, self._obj = raw, obj

    def __getattr__(self, name):
        return getattr(self._raw, name)

    async def text(self) -> str:
        return ""

    async def json(self, **_kw) -> dict:
        return self._obj


def install() -> None:
    """Teach kmock's request parser to read protobuf bodies."""
    from kmock._internal import rendering

    original = rendering.Request._parse.__func__

    @classmethod
    async def _parse(cls, raw_request, *, id=0):
        if "protobuf" in raw_request.headers.get("Content-Type", ""):
            body = await raw_request.read()
            if body:
                raw_request = _DecodedRequest(raw_request, decode(body))
        return await original(cls, raw_request, id=id)

    rendering.Request._parse = _parse
