//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`),
//! which kubectl's generator commands (`kubectl create configmap`, `create
//! deployment`, `run`, ...) send. The body is the `k8s\0` magic and a
//! runtime.Unknown envelope {typeMeta, raw}; `raw` is the object's message.
//!
//! Field layouts (tag, wire kind, nested type) come from table.json, generated
//! by hack/update-proto-table.py from the k8s-pb crate; JSON field names come
//! from our OpenAPI schemas of the same types. Responses stay JSON (clients
//! list JSON in their Accept header).

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Map, Value};

use crate::openapi::OpenApi;

const MAGIC: &[u8] = b"k8s\x00";
const TABLE: &str = include_str!("table.json");

#[derive(Debug, Clone)]
enum Kind {
    Str,
    Bool,
    Int,
    Bytes,
    Message(String),
    /// map<string, V>: V is Str, Bytes or Message
    Map(Box<Kind>),
}

#[derive(Debug, Clone)]
struct Field {
    json: String,
    kind: Kind,
    repeated: bool,
}

/// Decodes protobuf bodies into the JSON objects the rest of the server handles.
pub struct Decoder {
    messages: HashMap<String, HashMap<u32, Field>>,
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn kind_of(k: &str, ty: &str) -> Kind {
    match k {
        "string" => Kind::Str,
        "bool" => Kind::Bool,
        "int32" | "int64" => Kind::Int,
        "bytes" => Kind::Bytes,
        "message" => Kind::Message(ty.to_string()),
        "map" => Kind::Map(Box::new(match ty {
            "string" => Kind::Str,
            "bytes" => Kind::Bytes,
            t => Kind::Message(t.to_string()),
        })),
        _ => Kind::Bytes,
    }
}

impl Decoder {
    /// Build the field tables, naming fields as the OpenAPI schemas do.
    pub fn new(openapi: &OpenApi) -> Decoder {
        let mut messages = HashMap::new();
        let parsed: Value = serde_json::from_str(TABLE).unwrap_or(Value::Null);
        for (name, fields) in parsed["messages"].as_object().into_iter().flatten() {
            let props = openapi.property_names(name);
            let mut by_tag = HashMap::new();
            for f in fields.as_array().into_iter().flatten() {
                let (Some(tag), Some(snake), Some(k), Some(ty)) =
                    (f[0].as_u64(), f[1].as_str(), f[2].as_str(), f[3].as_str())
                else {
                    continue;
                };
                let guess = camel(snake);
                // the schema's spelling ("podIP", "volumeID") differs from camelCase only in case
                let json = props
                    .iter()
                    .find(|p| p.eq_ignore_ascii_case(&guess))
                    .cloned()
                    .unwrap_or(guess);
                by_tag.insert(
                    tag as u32,
                    Field {
                        json,
                        kind: kind_of(k, ty),
                        repeated: f[4].as_u64() == Some(1),
                    },
                );
            }
            messages.insert(name.clone(), by_tag);
        }
        Decoder { messages }
    }

    /// Decode a `k8s\0`-framed body. `schema_of` maps (apiVersion, kind) to a schema name.
    pub fn decode(
        &self,
        body: &[u8],
        schema_of: &dyn Fn(&str, &str) -> Option<String>,
    ) -> Result<Value, String> {
        let rest = body
            .strip_prefix(MAGIC)
            .ok_or("the protobuf body does not start with the k8s magic number")?;
        let mut r = Reader { b: rest, i: 0 };
        let (mut api_version, mut kind, mut raw, mut encoding) =
            (String::new(), String::new(), None, String::new());
        while !r.done() {
            let (tag, wire) = r.key()?;
            match (tag, wire) {
                (1, 2) => {
                    let mut tm = Reader {
                        b: r.bytes()?,
                        i: 0,
                    };
                    while !tm.done() {
                        match tm.key()? {
                            (1, 2) => api_version = tm.string()?,
                            (2, 2) => kind = tm.string()?,
                            (_, w) => tm.skip(w)?,
                        }
                    }
                }
                (2, 2) => raw = Some(r.bytes()?),
                (3, 2) => encoding = r.string()?,
                (_, w) => r.skip(w)?,
            }
        }
        if !encoding.is_empty() {
            return Err(format!(
                "unsupported protobuf content encoding {encoding:?}"
            ));
        }
        let raw = raw.ok_or("the protobuf envelope holds no object")?;
        let schema = schema_of(&api_version, &kind)
            .ok_or_else(|| format!("no protobuf decoding for {api_version}, Kind={kind}"))?;
        let mut obj = self.message(&schema, raw, 0)?;
        if let Some(o) = obj.as_object_mut() {
            o.insert("apiVersion".into(), api_version.into());
            o.insert("kind".into(), kind.into());
        }
        Ok(obj)
    }

    fn message(&self, ty: &str, b: &[u8], depth: usize) -> Result<Value, String> {
        if depth > 64 {
            return Err("protobuf message nested too deeply".into());
        }
        let mut r = Reader { b, i: 0 };
        // types whose JSON form is not an object
        match ty.rsplit('.').next().unwrap_or_default() {
            // Go writes a zero time as an empty message: JSON's null
            "Time" | "MicroTime" if ty.contains(".meta.v1.") && b.is_empty() => {
                return Ok(Value::Null);
            }
            "Time" | "MicroTime" if ty.contains(".meta.v1.") => {
                let (mut secs, mut nanos) = (0i64, 0i64);
                while !r.done() {
                    match r.key()? {
                        (1, 0) => secs = r.varint()? as i64,
                        (2, 0) => nanos = r.varint()? as i64,
                        (_, w) => r.skip(w)?,
                    }
                }
                let t = chrono::DateTime::from_timestamp(secs, nanos.clamp(0, 999_999_999) as u32)
                    .ok_or("time out of range")?;
                let f = if ty.ends_with("MicroTime") {
                    "%Y-%m-%dT%H:%M:%S%.6fZ"
                } else {
                    "%Y-%m-%dT%H:%M:%SZ"
                };
                return Ok(t.format(f).to_string().into());
            }
            "Duration" if ty.contains(".meta.v1.") => {
                let mut nanos = 0i64;
                while !r.done() {
                    match r.key()? {
                        (1, 0) => nanos = r.varint()? as i64,
                        (_, w) => r.skip(w)?,
                    }
                }
                return Ok(format!("{}s", nanos as f64 / 1e9).into());
            }
            "IntOrString" => {
                let (mut is_str, mut int, mut s) = (false, 0i64, String::new());
                while !r.done() {
                    match r.key()? {
                        (1, 0) => is_str = r.varint()? == 1,
                        (2, 0) => int = r.varint()? as i64 as i32 as i64,
                        (3, 2) => s = r.string()?,
                        (_, w) => r.skip(w)?,
                    }
                }
                return Ok(if is_str { s.into() } else { int.into() });
            }
            "Quantity" => {
                let mut s = String::new();
                while !r.done() {
                    match r.key()? {
                        (1, 2) => s = r.string()?,
                        (_, w) => r.skip(w)?,
                    }
                }
                return Ok(s.into());
            }
            "RawExtension" | "FieldsV1" | "JSON" => {
                let mut raw: &[u8] = &[];
                while !r.done() {
                    match r.key()? {
                        (1, 2) => raw = r.bytes()?,
                        (_, w) => r.skip(w)?,
                    }
                }
                return serde_json::from_slice(raw)
                    .map_err(|e| format!("embedded JSON in {ty}: {e}"));
            }
            _ => {}
        }
        let fields = self
            .messages
            .get(ty)
            .ok_or_else(|| format!("no protobuf layout for {ty}"))?;
        let mut out = Map::new();
        while !r.done() {
            let (tag, wire) = r.key()?;
            let Some(f) = fields.get(&tag) else {
                r.skip(wire)?;
                continue;
            };
            match &f.kind {
                Kind::Map(v) => {
                    let mut e = Reader {
                        b: r.bytes()?,
                        i: 0,
                    };
                    let (mut key, mut val) = (String::new(), Value::Null);
                    while !e.done() {
                        match e.key()? {
                            (1, 2) => key = e.string()?,
                            (2, w) => val = self.scalar_or_message(v, w, &mut e, depth)?,
                            (_, w) => e.skip(w)?,
                        }
                    }
                    let m = out
                        .entry(f.json.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(m) = m.as_object_mut() {
                        m.insert(key, val);
                    }
                }
                k if f.repeated && wire == 2 && matches!(k, Kind::Int | Kind::Bool) => {
                    // packed scalars
                    let mut p = Reader {
                        b: r.bytes()?,
                        i: 0,
                    };
                    while !p.done() {
                        let v = p.varint()?;
                        push(&mut out, &f.json, scalar_varint(k, v));
                    }
                }
                k => {
                    let v = self.scalar_or_message(k, wire, &mut r, depth)?;
                    if f.repeated {
                        push(&mut out, &f.json, v);
                    } else if !unset(&f.json, &v) {
                        out.insert(f.json.clone(), v);
                    }
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn scalar_or_message(
        &self,
        k: &Kind,
        wire: u8,
        r: &mut Reader,
        depth: usize,
    ) -> Result<Value, String> {
        match (k, wire) {
            (Kind::Str, 2) => Ok(r.string()?.into()),
            (Kind::Bytes, 2) => Ok(base64::engine::general_purpose::STANDARD
                .encode(r.bytes()?)
                .into()),
            (Kind::Message(t), 2) => self.message(t, r.bytes()?, depth + 1),
            (Kind::Int | Kind::Bool, 0) => Ok(scalar_varint(k, r.varint()?)),
            (k, w) => Err(format!("protobuf wire type {w} does not fit a {k:?} field")),
        }
    }
}

/// Go writes every non-pointer field to protobuf, zero or not, where its
/// JSON form leaves a zero `omitempty` field out: an empty string or a false
/// boolean in the wire format means "not set" (`hostname: ""` is no hostname)
/// except for the pointer fields where the zero value is a choice of its own;
/// a zero number only for the non-pointer `omitempty` integers named here
/// (`replicas: 0` is a pointer's choice, `generation: 0` is no generation).
fn unset(json_name: &str, v: &Value) -> bool {
    const ZERO_MEANS_UNSET: &[&str] = &[
        "generation",
        "observedGeneration",
        "hostPort",
        "nodePort",
        "healthCheckNodePort",
        "minReadySeconds",
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ];
    const EMPTY_STRING_MEANS_SOMETHING: &[&str] = &["storageClassName", "ingressClassName"];
    const FALSE_MEANS_SOMETHING: &[&str] = &[
        "automountServiceAccountToken",
        "enableServiceLinks",
        "hostUsers",
        "allowPrivilegeEscalation",
        "allocateLoadBalancerNodePorts",
        "ready",
        "serving",
        "terminating",
        "immutable",
        "suspend",
    ];
    match v {
        Value::String(s) => s.is_empty() && !EMPTY_STRING_MEANS_SOMETHING.contains(&json_name),
        Value::Bool(false) => !FALSE_MEANS_SOMETHING.contains(&json_name),
        Value::Number(n) => n.as_i64() == Some(0) && ZERO_MEANS_UNSET.contains(&json_name),
        _ => false,
    }
}

fn scalar_varint(k: &Kind, v: u64) -> Value {
    match k {
        Kind::Bool => Value::Bool(v != 0),
        _ => Value::from(v as i64),
    }
}

fn push(out: &mut Map<String, Value>, k: &str, v: Value) {
    let e = out
        .entry(k.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(a) = e.as_array_mut() {
        a.push(v);
    }
}

/// A cursor over protobuf wire bytes.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self.b.get(self.i).ok_or("truncated protobuf varint")?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift.min(63);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("protobuf varint too long".into())
    }

    fn key(&mut self) -> Result<(u32, u8), String> {
        let k = self.varint()?;
        Ok(((k >> 3) as u32, (k & 7) as u8))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()? as usize;
        let end = self
            .i
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or("truncated protobuf field")?;
        let s = &self.b[self.i..end];
        self.i = end;
        Ok(s)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| "a protobuf string is not UTF-8".to_string())
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            w => Err(format!("unsupported protobuf wire type {w}")),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), String> {
        if self.i + n > self.b.len() {
            return Err("truncated protobuf field".into());
        }
        self.i += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal encoder for tests: length-delimited and varint fields.
    fn ld(tag: u32, b: &[u8]) -> Vec<u8> {
        let mut out = varint(u64::from(tag << 3 | 2));
        out.extend(varint(b.len() as u64));
        out.extend_from_slice(b);
        out
    }
    fn vi(tag: u32, v: u64) -> Vec<u8> {
        let mut out = varint(u64::from(tag << 3));
        out.extend(varint(v));
        out
    }
    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [ld(1, api_version.as_bytes()), ld(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), ld(1, &tm), ld(2, raw)].concat()
    }

    fn schema_of(av: &str, kind: &str) -> Option<String> {
        match (av, kind) {
            ("v1", "ConfigMap") => Some("io.k8s.api.core.v1.ConfigMap".into()),
            ("v1", "Service") => Some("io.k8s.api.core.v1.Service".into()),
            ("apps/v1", "Deployment") => Some("io.k8s.api.apps.v1.Deployment".into()),
            _ => None,
        }
    }

    #[test]
    fn zero_values_of_go_fields_are_not_set() {
        let d = Decoder::new(&OpenApi::build());
        // generateName "" and namespace "" as Go writes them; immutable false
        // (a pointer: false is a choice)
        let meta = [ld(1, b"cfg"), ld(2, b""), ld(3, b"")].concat();
        let raw = [ld(1, &meta), vi(4, 0)].concat();
        let v = d
            .decode(&envelope("v1", "ConfigMap", &raw), &schema_of)
            .expect("decode");
        assert_eq!(v["metadata"], serde_json::json!({"name": "cfg"}));
        assert_eq!(v["immutable"], false);
        // generation 0 and minReadySeconds 0 as Go writes them; replicas 0 (a
        // pointer: zero is a choice)
        let meta = [ld(1, b"d"), vi(7, 0)].concat();
        let spec = [vi(1, 0), vi(5, 0)].concat();
        let raw = [ld(1, &meta), ld(2, &spec)].concat();
        let v = d
            .decode(&envelope("apps/v1", "Deployment", &raw), &schema_of)
            .expect("decode");
        assert_eq!(v["metadata"], serde_json::json!({"name": "d"}));
        assert_eq!(v["spec"], serde_json::json!({"replicas": 0}));
    }

    #[test]
    fn config_map() {
        let d = Decoder::new(&OpenApi::build());
        let meta = [
            ld(1, b"cfg"),
            ld(11, &[ld(1, b"app"), ld(2, b"web")].concat()),
        ]
        .concat();
        let raw = [
            ld(1, &meta),
            ld(2, &[ld(1, b"a"), ld(2, b"1")].concat()),
            ld(3, &[ld(1, b"bin"), ld(2, b"\x00\x01")].concat()),
            vi(4, 1),
        ]
        .concat();
        let v = d
            .decode(&envelope("v1", "ConfigMap", &raw), &schema_of)
            .expect("decode");
        assert_eq!(
            v,
            serde_json::json!({"metadata": {"name": "cfg", "labels": {"app": "web"}}, "data": {"a": "1"}, "binaryData": {"bin": "AAE="}, "immutable": true, "apiVersion": "v1", "kind": "ConfigMap"})
        );
    }

    #[test]
    fn service_ports_use_schema_spelling_and_int_or_string() {
        let d = Decoder::new(&OpenApi::build());
        let port = [
            ld(1, b"http"),
            vi(3, 80),
            ld(4, &[vi(1, 1), ld(3, b"web")].concat()),
            vi(5, 0),
        ]
        .concat();
        let spec = [ld(1, &port), ld(3, b"10.0.0.9"), ld(4, b"ClusterIP")].concat();
        let raw = [ld(1, &ld(1, b"s")), ld(2, &spec)].concat();
        let v = d
            .decode(&envelope("v1", "Service", &raw), &schema_of)
            .expect("decode");
        assert_eq!(v["spec"]["clusterIP"], "10.0.0.9");
        assert_eq!(
            v["spec"]["ports"][0],
            serde_json::json!({"name": "http", "port": 80, "targetPort": "web"})
        );
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        let d = Decoder::new(&OpenApi::build());
        assert!(d.decode(b"nope", &schema_of).is_err());
        assert!(d
            .decode(&envelope("v1", "Widget", b""), &schema_of)
            .is_err());
        let truncated = [MAGIC.to_vec(), vec![0x0a, 0x10, 0x01]].concat();
        assert!(d.decode(&truncated, &schema_of).is_err());
        let mut junk = MAGIC.to_vec();
        junk.extend((0..200u8).map(|i| i.wrapping_mul(37)));
        let _ = d.decode(&junk, &schema_of);
    }
}
