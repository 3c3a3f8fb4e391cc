"""Schema filter variants for `make bench` (imported by run.py).

POST requests with a 1 KB and a 64 KB JSON body, each through: Envoy with
only the router, the empty wasm filter, and the schema filter validating the
body, all three behind Envoy's buffer filter (see `buffer_filter`) against an order schema (parse with the JSON-bomb limits, duplicate-key
check, JSON Schema validation). Each trio has its own router-only baseline
with the same body, so the figures are the filters' cost per request, not the
cost of moving the body. The goal (issue 5): validating the 1 KB body costs at
most 3x the empty wasm filter with the same body ("schema 1 KB" / "empty 1 KB").

Python 3 standard library only.
"""

import json

# The contract: one operation on run.py's request path.
ORDER_SCHEMA = {
    "type": "object",
    "required": ["customer", "items"],
    "additionalProperties": False,
    "properties": {
        "customer": {
            "type": "object",
            "required": ["id", "email"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "email": {"type": "string", "format": "email", "maxLength": 254},
                "name": {"type": "string", "maxLength": 100},
            },
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 2000,
            "items": {
                "type": "object",
                "required": ["sku", "qty", "price"],
                "additionalProperties": False,
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 100},
                    "price": {"type": "number", "exclusiveMinimum": 0},
                    "note": {"type": ["string", "null"], "maxLength": 200},
                },
            },
        },
        "coupon": {"type": ["string", "null"]},
    },
}


def order_body(target_len: int) -> bytes:
    """A valid order of about `target_len` bytes (never more)."""
    def render(n):
        items = [
            {"sku": f"AB-{i % 10000:04d}", "qty": 1 + i % 9, "price": 9.5 + i, "note": None if i % 2 else "gift wrap"}
            for i in range(n)
        ]
        doc = {"customer": {"id": 42, "email": "buyer@example.com", "name": "A. Buyer"},
               "items": items, "coupon": None}
        return json.dumps(doc, separators=(",", ":")).encode()

    n = 1
    while len(render(n + 1)) <= target_len:
        n += 1
    return render(n)


def config(request_path: str) -> str:
    return json.dumps({
        "max_body_bytes": 131072,
        "rules": [{
            "match": {"path": request_path, "methods": ["POST"]},
            "body": {"schema": ORDER_SCHEMA},
        }],
    })


def buffer_filter() -> dict:
    """Envoy's native buffer filter, first in every POST variant. Without it the
    router's `direct_response` answers as soon as the headers arrive, before the
    body is read, and Envoy then closes the connection (`connection: close`): the
    router-only and empty-filter baselines would pay a new TCP connection per
    request while the schema filter, which reads the whole body first, would not."""
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 131072,
        },
    }


def held(entry: dict) -> dict:
    """The schema filter holds headers while it buffers (docs/src/controls/schema.md)."""
    entry["typed_config"]["config"]["allow_on_headers_stop_iteration"] = True
    return entry


def variants(ctx):
    schema_wasm = ctx.dist / "palisade_schema.wasm"
    empty = ctx.empty_filter()
    if not schema_wasm.is_file():
        ctx.notes.append("schema variants skipped: dist/palisade_schema.wasm missing (make build)")
        return []
    out = []
    for size, label in ((1024, "1 KB"), (65536, "64 KB")):
        body = order_body(size)
        headers = {"Content-Type": "application/json"}
        base = f"schema-router-{label.replace(' ', '').lower()}"
        common = dict(method="POST", request_headers=headers, request_body=body)
        out.append(ctx.Variant(
            base, f"router only, POST {label} JSON", http_filters=[buffer_filter()], **common,
            note=f"baseline of the schema {label} variants ({len(body)} bytes)",
        ))
        if empty is not None:
            out.append(ctx.Variant(
                f"schema-empty-{label.replace(' ', '').lower()}", f"empty wasm filter, POST {label} JSON",
                http_filters=[buffer_filter()] + empty, baseline=base, modules=[ctx.dist / "bench" / "palisade_empty.wasm"], **common,
                note="the floor with this body",
            ))
        else:
            ctx.notes.append("schema: empty wasm filter missing, no empty-filter POST variants")
        for floor_name, key, what, note in (
            ("floor_schema", "floor", "serde_json + jsonschema alone",
             "hold the headers, get the body, from_slice into a Value, is_valid, publish "
             "(benches/empty-filter floor-schema): no limits, no duplicate keys, no report"),
            ("floor_schema_bare", "floor-bare", "hold, body read, parse and is_valid only",
             "hold the headers, get the body, from_slice, is_valid; no header map, no decision "
             "(floor-schema-bare)"),
        ):
            floor = ctx.dist / "bench" / f"{floor_name}.wasm"
            if not floor.is_file():
                ctx.notes.append(f"schema floor skipped: {floor} missing (make bench-probes)")
                continue
            wasm_entry = ctx.wasm_filter(floor_name, floor, json.dumps(ORDER_SCHEMA))
            out.append(ctx.Variant(
                f"schema-{key}-{label.replace(' ', '').lower()}", f"floor: {what}, POST {label} JSON",
                http_filters=[buffer_filter(), held(wasm_entry)],
                baseline=base, modules=[floor], filter_cost_of="schema", **common,
                empty_of=f"schema-empty-{label.replace(' ', '').lower()}", note=note,
            ))
        out.append(ctx.Variant(
            f"schema-{label.replace(' ', '').lower()}", f"schema: validate POST {label} JSON",
            http_filters=[buffer_filter(), held(ctx.wasm_filter("schema", schema_wasm, config(ctx.request_path)))],
            baseline=base, modules=[schema_wasm], filter_cost_of="schema", **common,
            empty_of=f"schema-empty-{label.replace(' ', '').lower()}",
            note=f"compare with the empty filter, POST {label} (goal for 1 KB: <= 3x)",
        ))
    return out
