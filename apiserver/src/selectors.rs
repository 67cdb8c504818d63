//! label and field selectors from list/watch query parameters

use std::collections::BTreeMap;

use serde_json::Value;

use crate::validation::{label_value, qualified_name};

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            Op::Eq(x) => v == Some(x),
            Op::NotEq(x) => v != Some(x),
            Op::In(xs) => v.is_some_and(|v| xs.contains(v)),
            Op::NotIn(xs) => v.is_none_or(|v| !xs.contains(v)),
            Op::Exists => v.is_some(),
            Op::NotExists => v.is_none(),
        }
    }
}

/// A label selector: requirements ANDed together.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

fn check_key(key: &str) -> Result<(), String> {
    let errs = qualified_name(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key \"{key}\": {}",
            errs.join("; ")
        ))
    }
}

fn check_value(v: &str) -> Result<(), String> {
    let errs = label_value(v);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label value: \"{v}\": at key: {}",
            errs.join("; ")
        ))
    }
}

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "unable to parse requirement: unexpected ')' in {s:?}"
                    ));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!(
            "unable to parse requirement: found '(' without a closing ')' in {s:?}"
        ));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: found '{rest}', expected: '('"))?;
    let mut vals = Vec::new();
    for v in inner.split(',') {
        let v = v.trim();
        check_value(v)?;
        vals.push(v.to_string());
    }
    Ok(vals)
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    let t = term.trim();
    if t.is_empty() {
        return Err("unable to parse requirement: found '', expected: identifier".into());
    }
    if let Some(key) = t.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement {
            key: key.into(),
            op: Op::NotExists,
        });
    }
    for (sym, neg) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = t.split_once(sym) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k)?;
            check_value(v)?;
            let op = if neg {
                Op::NotEq(v.into())
            } else {
                Op::Eq(v.into())
            };
            return Ok(Requirement { key: k.into(), op });
        }
    }
    let mut words = t.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    if rest.is_empty() {
        check_key(key)?;
        return Ok(Requirement {
            key: key.into(),
            op: Op::Exists,
        });
    }
    check_key(key)?;
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement {
            key: key.into(),
            op: Op::NotIn(parse_set(set)?),
        });
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement {
            key: key.into(),
            op: Op::In(parse_set(set)?),
        });
    }
    Err(format!(
        "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
    ))
}

impl LabelSelector {
    /// Upstream's syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, ANDed by commas.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        if s.trim().is_empty() {
            return Ok(Self::everything());
        }
        let reqs = split_top(s)?
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()?;
        Ok(LabelSelector { reqs })
    }

    pub fn everything() -> LabelSelector {
        LabelSelector { reqs: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    /// From a metav1.LabelSelector object (matchLabels, matchExpressions).
    pub fn from_json(v: &Value) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                let val = val
                    .as_str()
                    .ok_or_else(|| format!("matchLabels[{k}] must be a string"))?;
                reqs.push(Requirement {
                    key: k.clone(),
                    op: Op::Eq(val.into()),
                });
            }
        }
        for e in v
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e["key"]
                .as_str()
                .ok_or("matchExpressions key must be a string")?
                .to_string();
            let vals: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            let op = match e["operator"].as_str() {
                Some("In") => Op::In(vals),
                Some("NotIn") => Op::NotIn(vals),
                Some("Exists") => Op::Exists,
                Some("DoesNotExist") => Op::NotExists,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            reqs.push(Requirement { key, op });
        }
        Ok(LabelSelector { reqs })
    }
}

/// A field selector: `k=v`, `k==v`, `k!=v`, ANDed by commas, with backslash escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

/// Split on an unescaped separator; returns the pieces still escaped.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if esc {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | ',' | '=' | '!')) => out.push(n),
                Some(n) => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{n}"
                    ))
                }
                None => return Err("invalid field selector: unterminated escape sequence".into()),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self::everything());
        }
        for part in split_unescaped(s, ',') {
            let (k, neg, v) = if let Some(i) = find_unescaped(&part, "!=") {
                (&part[..i], true, &part[i + 2..])
            } else if let Some(i) = find_unescaped(&part, "==") {
                (&part[..i], false, &part[i + 2..])
            } else if let Some(i) = find_unescaped(&part, "=") {
                (&part[..i], false, &part[i + 1..])
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let key = k.trim();
            if key.is_empty() {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            }
            terms.push((key.to_string(), neg, unescape(v)?));
        }
        Ok(FieldSelector { terms })
    }

    pub fn everything() -> FieldSelector {
        FieldSelector { terms: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn fields(&self) -> Vec<&str> {
        self.terms.iter().map(|(k, _, _)| k.as_str()).collect()
    }

    pub fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|(k, neg, v)| {
            let have = get(k).unwrap_or_default();
            (have == *v) != *neg
        })
    }
}

/// Byte index of an unescaped `pat` in `s`.
fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// metadata.labels of an object as a map (empty when absent or malformed).
pub fn object_labels(obj: &Value) -> BTreeMap<String, String> {
    labels_of(obj.pointer("/metadata/labels"))
}

/// The string members of a `metadata.labels` value (anything else is no labels).
pub fn labels_of(labels: Option<&Value>) -> BTreeMap<String, String> {
    labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_sets() {
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        assert!(LabelSelector::parse("app=web").expect("p").matches(&l));
        assert!(LabelSelector::parse("app==web,tier=fe")
            .expect("p")
            .matches(&l));
        assert!(!LabelSelector::parse("app!=web").expect("p").matches(&l));
        assert!(LabelSelector::parse("app in (web, db)")
            .expect("p")
            .matches(&l));
        assert!(!LabelSelector::parse("app notin (web)")
            .expect("p")
            .matches(&l));
        assert!(LabelSelector::parse("tier,!missing")
            .expect("p")
            .matches(&l));
        assert!(!LabelSelector::parse("missing").expect("p").matches(&l));
        assert!(LabelSelector::parse("missing notin (x)")
            .expect("p")
            .matches(&l));
        assert!(LabelSelector::parse("").expect("p").is_empty());
    }

    #[test]
    fn parse_errors() {
        assert!(LabelSelector::parse("a in (").is_err());
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("bad key!=x").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
        assert!(LabelSelector::parse(",").is_err());
    }

    #[test]
    fn from_json_selector() {
        let s = LabelSelector::from_json(&json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]})).expect("sel");
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "x")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(LabelSelector::from_json(
            &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
        )
        .is_err());
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").expect("p");
        assert_eq!(f.fields(), vec!["spec.nodeName", "status.phase"]);
        let get = |k: &str| match k {
            "spec.nodeName" => Some("n1".to_string()),
            "status.phase" => Some("Running".to_string()),
            _ => None,
        };
        assert!(f.matches(&get));
        assert!(!FieldSelector::parse("spec.nodeName==n2")
            .expect("p")
            .matches(&get));
        let esc = FieldSelector::parse(r"metadata.name=a\,b").expect("p");
        assert!(esc.matches(&|_| Some("a,b".to_string())));
        assert!(FieldSelector::parse("nonsense").is_err());
        assert!(FieldSelector::parse(r"a=b\q").is_err());
        // an absent field compares as ""
        assert!(FieldSelector::parse("spec.nodeName=")
            .expect("p")
            .matches(&|_| None));
    }
}
