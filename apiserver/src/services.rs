//! Service strategy: ClusterIPs and NodePorts allocated on create and update,
//! released on delete (and rolled back when the write itself fails)

use serde_json::Value;

use crate::allocator::AllocError;
use crate::error::{ApiError, ApiResult, Cause};
use crate::store::Ctx;

/// What one write allocated: (is_ip, value).
pub type Allocated = Vec<(bool, String)>;

fn needs_node_ports(svc: &Value) -> bool {
    matches!(
        svc["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    )
}

fn node_ports(svc: &Value) -> Vec<String> {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .filter(|p| *p > 0)
        .map(|p| p.to_string())
        .collect()
}

fn invalid(ctx: &Ctx, svc: &Value, field: String, value: &str, e: &AllocError) -> ApiError {
    match e {
        AllocError::Storage(s) => ApiError::internal(s.to_string()),
        _ => ApiError::invalid(
            ctx.res,
            svc["metadata"]["name"].as_str().unwrap_or_default(),
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                field,
                message: format!("Invalid value: {value:?}: failed to allocate: {e}"),
            }],
        ),
    }
}

/// Allocate the ClusterIP and NodePorts a Service needs. On update (`old` given),
/// the ClusterIP carries over and only new NodePorts are allocated.
pub async fn allocate(ctx: &Ctx<'_>, svc: &mut Value, old: Option<&Value>) -> ApiResult<Allocated> {
    if ctx.res.kind != "Service" {
        return Ok(Vec::new());
    }
    let mut got: Allocated = Vec::new();
    let r = allocate_inner(ctx, svc, old, &mut got).await;
    if r.is_err() {
        release(ctx, &got).await;
    }
    r.map(|()| got)
}

async fn allocate_inner(
    ctx: &Ctx<'_>,
    svc: &mut Value,
    old: Option<&Value>,
    got: &mut Allocated,
) -> ApiResult<()> {
    let api = ctx.api;
    let external_name = svc["spec"]["type"] == "ExternalName";
    let want = svc["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match old {
        Some(o) => {
            if want.is_empty() {
                if let Some(ip) = o["spec"].get("clusterIP") {
                    svc["spec"]["clusterIP"] = ip.clone();
                }
                if let Some(ips) = o["spec"].get("clusterIPs") {
                    svc["spec"]["clusterIPs"] = ips.clone();
                }
            }
        }
        None if external_name => {}
        None if want == "None" => {
            svc["spec"]["clusterIPs"] = serde_json::json!(["None"]);
        }
        None => {
            let fixed = (!want.is_empty()).then_some(want.as_str());
            let ip = api
                .service_ips
                .allocate(&api.storage, fixed)
                .await
                .map_err(|e| invalid(ctx, svc, "spec.clusterIPs".into(), &want, &e))?;
            got.push((true, ip.clone()));
            svc["spec"]["clusterIP"] = ip.clone().into();
            svc["spec"]["clusterIPs"] = serde_json::json!([ip]);
        }
    }
    let had: Vec<String> = old.map(node_ports).unwrap_or_default();
    if needs_node_ports(svc) {
        let n = svc["spec"]["ports"].as_array().map(Vec::len).unwrap_or(0);
        for i in 0..n {
            let cur = svc["spec"]["ports"][i]["nodePort"]
                .as_i64()
                .filter(|p| *p > 0);
            let value = match cur {
                Some(p) if had.contains(&p.to_string()) => continue,
                Some(p) => api
                    .node_ports
                    .allocate(&api.storage, Some(&p.to_string()))
                    .await
                    .map_err(|e| {
                        invalid(
                            ctx,
                            svc,
                            format!("spec.ports[{i}].nodePort"),
                            &p.to_string(),
                            &e,
                        )
                    })?,
                None => api
                    .node_ports
                    .allocate(&api.storage, None)
                    .await
                    .map_err(|e| invalid(ctx, svc, format!("spec.ports[{i}].nodePort"), "", &e))?,
            };
            got.push((false, value.clone()));
            let port: i64 = value.parse().unwrap_or(0);
            svc["spec"]["ports"][i]["nodePort"] = port.into();
        }
    } else if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
        for p in ports {
            if let Some(o) = p.as_object_mut() {
                o.remove("nodePort");
            }
        }
    }
    // ports an update dropped go back to the pool once the write lands; release now
    // is safe because the old object still names them only until then
    if old.is_some() && !ctx.dry_run {
        let now: Vec<String> = node_ports(svc);
        for p in had.iter().filter(|p| !now.contains(p)) {
            if let Err(e) = api.node_ports.release(&api.storage, p).await {
                tracing::warn!(port = %p, error = %e, "releasing a node port");
            }
        }
    }
    Ok(())
}

/// Give back what a failed or dry-run write allocated.
pub async fn release(ctx: &Ctx<'_>, got: &Allocated) {
    for (is_ip, v) in got {
        let range = if *is_ip {
            &ctx.api.service_ips
        } else {
            &ctx.api.node_ports
        };
        if let Err(e) = range.release(&ctx.api.storage, v).await {
            tracing::warn!(value = %v, error = %e, "releasing an allocation");
        }
    }
}

/// A deleted Service's ClusterIP and NodePorts go back to the pools.
pub async fn release_all(ctx: &Ctx<'_>, svc: &Value) {
    if ctx.res.kind != "Service" {
        return;
    }
    let mut got: Allocated = Vec::new();
    if let Some(ip) = svc["spec"]["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    {
        got.push((true, ip.to_string()));
    }
    got.extend(node_ports(svc).into_iter().map(|p| (false, p)));
    release(ctx, &got).await;
}
