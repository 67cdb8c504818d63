#!/usr/bin/env python3
"""Regenerate apiserver/src/protobuf/table.json: the protobuf field layout of the
Kubernetes API types we decode (tag, wire kind, nested message type), derived
from the prost code of the k8s-pb crate (crates.io). JSON field names are not
stored: the apiserver takes them from its OpenAPI schemas at run time.

    hack/update-proto-table.py [PATH_TO_k8s-pb/src]

Without an argument, the newest k8s-pb in the cargo registry is used.
"""
import glob
import json
import os
import re
import sys

PACKAGES = [
    "api/core/v1", "api/apps/v1", "api/batch/v1", "api/coordination/v1", "api/discovery/v1",
    "api/events/v1", "api/autoscaling/v1", "api/policy/v1", "api/rbac/v1", "api/networking/v1",
    "api/scheduling/v1", "api/storage/v1", "api/authentication/v1", "api/certificates/v1",
    "apimachinery/pkg/apis/meta/v1", "apimachinery/pkg/runtime", "apimachinery/pkg/util/intstr",
    "apimachinery/pkg/api/resource",
]

FIELD = re.compile(r'#\[prost\((?P<attr>[^\]]*)\)\]\s*(?:#\[[^\]]*\]\s*)*pub (?:r#)?(?P<name>\w+):')
STRUCT = re.compile(r'pub struct (\w+) \{(.*?)\n\}', re.S)


def qualified(module, path):
    """Resolve a Rust type path inside module (a list) to io.k8s.<pkg>.<Name>."""
    parts = path.split("::")
    mod = list(module)
    while parts and parts[0] == "super":
        parts.pop(0)
        mod.pop()
    return "io.k8s." + ".".join(mod + parts[:-1]) + "." + parts[-1] if len(parts) > 1 or mod else parts[-1]


def inner_type(ty):
    """The message type inside Option<...>, Vec<...> or a map's value."""
    ty = ty.replace(" ", "")
    for wrap in ("::core::option::Option<", "::prost::alloc::vec::Vec<"):
        if ty.startswith(wrap):
            ty = ty[len(wrap):-1]
    if "BTreeMap<" in ty:
        ty = ty[ty.index("BTreeMap<") + len("BTreeMap<"):-1]
        ty = ty.split(",", 1)[1].rstrip(",")
    return ty


def type_after(text, i):
    """The Rust type starting at i, up to the ',' that ends it (angle brackets balanced)."""
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "," and depth == 0:
            break
        j += 1
    return " ".join(text[i:j].split())


def main():
    if len(sys.argv) > 1:
        src = sys.argv[1]
    else:
        home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
        found = sorted(glob.glob(f"{home}/registry/src/*/k8s-pb-*/src"))
        if not found:
            sys.exit("k8s-pb not found in the cargo registry: `cargo info k8s-pb` downloads it")
        src = found[-1]
    table = {}
    for pkg in PACKAGES:
        module = pkg.split("/")
        text = open(os.path.join(src, pkg, "mod.rs")).read()
        for name, body in STRUCT.findall(text):
            fields = []
            for m in FIELD.finditer(body):
                attr, fname = m.group("attr"), m.group("name")
                ty = type_after(body, m.end())
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                kind = attr.split(",")[0].strip()
                repeated = ", repeated" in attr
                entry = [tag, fname]
                if kind.startswith("btree_map") or kind.startswith("map"):
                    k, v = [s.strip() for s in re.search(r'"([^"]*)"', attr).group(1).split(",")]
                    if v == "message":
                        entry += ["map", qualified(module, inner_type(ty).replace("::prost::alloc::", ""))]
                    else:
                        entry += ["map", v]
                elif kind == "message":
                    entry += ["message", qualified(module, inner_type(ty))]
                else:
                    entry += [kind.split("=")[0].strip(), ""]
                entry.append(1 if repeated else 0)
                fields.append(entry)
            table[qualified(module, name)] = fields
    out = os.path.join(os.path.dirname(__file__), "..", "apiserver", "src", "protobuf", "table.json")
    with open(out, "w") as f:
        json.dump({"source": os.path.basename(os.path.dirname(src)), "messages": table}, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {len(table)} messages to {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
