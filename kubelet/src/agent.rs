//! The kubelet put together: register the node, keep its lease and status,
//! make the pod network once the node has a podCIDR, and run the pod workers
//! until SIGTERM. Containers keep running when the kubelet stops.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ContainerImage;
use tokio::sync::watch;

use crate::cni::Cni;
use crate::config::Settings;
use crate::image::ImageStore;
use crate::pods::Kubelet;
use crate::runtime::Runtime;

pub async fn run(
    client: kube::Client,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(settings.root_dir.join("pods"))?;
    let runtime = Runtime::new(&settings.root_dir, exe)?;
    let images = Arc::new(ImageStore::open(
        settings.root_dir.join("images"),
        settings.insecure_registries.clone(),
    )?);

    let node = crate::node::register(&client, &settings).await?;
    let node_uid = node.metadata.uid.clone().unwrap_or_default();
    let first_cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .or_else(|| settings.pod_cidr.clone());

    // podCIDR -> the pod network; Ready waits for it
    let (cidr_tx, mut cidr_rx) = watch::channel(first_cidr);
    let (cni_tx, cni_rx) = watch::channel::<Option<Cni>>(None);
    let (net_tx, net_rx) = watch::channel(Some("no podCIDR assigned to the node yet".to_string()));
    {
        let bin = settings.cni_bin_dir.clone();
        let root = settings.root_dir.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let cidr = cidr_rx.borrow_and_update().clone();
                if let Some(c) = cidr {
                    if cni_tx.borrow().as_ref().map(|x| &x.pod_cidr) != Some(&c) {
                        tracing::info!(pod_cidr = %c, "pod network ready");
                        cni_tx.send_replace(Some(Cni::new(bin.clone(), &root, c)));
                        net_tx.send_replace(None);
                    }
                }
                tokio::select! {
                    r = cidr_rx.changed() => if r.is_err() { return },
                    _ = common::stopped(&mut shutdown) => return,
                }
            }
        });
    }

    let store = images.clone();
    let inputs = crate::node::NodeInputs {
        network: net_rx,
        images: Arc::new(move || {
            store
                .list()
                .into_iter()
                .take(50)
                .map(|(names, size)| ContainerImage {
                    names: Some(names),
                    size_bytes: Some(size as i64),
                })
                .collect()
        }),
    };
    tokio::spawn(crate::node::run_status(
        client.clone(),
        settings.clone(),
        inputs,
        cidr_tx,
        shutdown.clone(),
    ));
    tokio::spawn(crate::node::run_lease(
        client.clone(),
        settings.clone(),
        node_uid,
        shutdown.clone(),
    ));

    let tls = crate::server::tls_config(&settings.tls, &settings.node_name, &settings.node_ips)?;
    let (addr, anonymous) = (settings.server, settings.tls.anonymous);
    let kl = Kubelet::new(client, settings, runtime, images, cni_rx);
    let bound = crate::server::serve(kl.clone(), addr, tls, anonymous, shutdown.clone()).await?;
    tracing::info!(address = %bound, "serving the kubelet API over HTTPS");
    tracing::info!(node = %kl.settings.node_name, "kubelet running");
    crate::pods::run(kl, shutdown).await;
    Ok(())
}
