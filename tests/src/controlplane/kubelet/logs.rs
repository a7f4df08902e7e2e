//! The kubelet's HTTPS endpoint, for what the API server asks of it: `GET
//! /containerLogs/{namespace}/{pod}/{container}` (behind `pods/log`, so `kubectl logs` and a
//! client's log reads work), with `tailLines`, `limitBytes` and `follow` (which streams until
//! the container ends). The API server reaches it at the node's InternalIP and
//! `daemonEndpoints.kubeletEndpoint.Port`, checking its certificate against the test CA.
//! Only loopback can reach it, so it asks no client certificate; exec, attach and
//! port-forward are not served.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::Kubelet;
use crate::controlplane::pki::Pair;

/// A TLS listener for axum: the handshake happens in `accept` (a slow client holds up
/// others, which is fine for one API server on loopback).
pub(super) struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    pub(super) fn port(&self) -> u16 {
        self.tcp.local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Binds a free loopback port (held from here on, so no other process can take it) with the
/// serving certificate `serving`.
pub(super) async fn listen(serving: &Pair) -> TlsListener {
    let certs = CertificateDer::pem_file_iter(&serving.cert)
        .expect("kubelet serving certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("kubelet serving certificate PEM");
    let key = PrivateKeyDer::from_pem_file(&serving.key).expect("kubelet serving key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("kubelet TLS configuration");
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the kubelet's port");
    TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}

pub(super) async fn serve(listener: TlsListener, kubelet: Arc<Kubelet>) {
    let app = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(kubelet);
    let _ = axum::serve(listener, app).await;
}

/// How often a followed log is checked for more output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

async fn container_logs(
    State(kubelet): State<Arc<Kubelet>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = kubelet.log_path(&namespace, &pod, &container);
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ),
        )
            .into_response();
    };
    let mut text = Vec::new();
    if file.read_to_end(&mut text).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let offset = text.len() as u64;
    if let Some(n) = query.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        text = lines[lines.len().saturating_sub(n)..].concat();
    }
    let limit = query
        .get("limitBytes")
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(limit) = limit {
        text.truncate(limit);
    }
    let follow = query.get("follow").is_some_and(|f| f == "true" || f == "1");
    if !follow || limit.is_some_and(|l| text.len() >= l) {
        return text.into_response();
    }
    // Followed: what is there, then what comes, until the container has stopped and its
    // output is all sent.
    let _ = file.seek(std::io::SeekFrom::Start(offset)).await;
    let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(text) });
    let rest = futures_util::stream::unfold(
        (file, kubelet, namespace, pod, container, false),
        |(mut file, kubelet, namespace, pod, container, done)| async move {
            if done {
                return None;
            }
            loop {
                let stopped = !kubelet.container_running(&namespace, &pod, &container);
                let mut more = Vec::new();
                if file.read_to_end(&mut more).await.is_err() {
                    return None;
                }
                if !more.is_empty() {
                    return Some((
                        Ok(more),
                        (file, kubelet, namespace, pod, container, stopped),
                    ));
                }
                if stopped {
                    return None;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        },
    );
    Body::from_stream(futures_util::StreamExt::chain(first, rest)).into_response()
}
