//! Building and running the HTTP server.
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::http::{self, middleware, ops};
use crate::services::Services;

/// The actix server for these services on this listener. Must run inside an actix system.
pub fn build_server(
    services: Arc<Services>,
    listener: TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    ops::install_metrics();
    let data = web::Data::from(services.clone());
    let workers = services
        .settings
        .workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
        .max(1);
    let with_admin = services.settings.admin_listen().is_none();
    let svc = services.clone();
    let server = HttpServer::new(move || {
        // Called on each worker's thread: its queries get a database pool of their own there.
        svc.store.pin_to_thread(workers);
        let d = data.clone();
        App::new()
            .app_data(d.clone())
            .wrap(from_fn(middleware::refuse_nul_in_path))
            .wrap(from_fn(middleware::security_headers))
            .wrap(from_fn(middleware::record_metrics))
            .wrap(TracingLogger::<middleware::QuietRootSpan>::new())
            .configure(|cfg| http::configure(cfg, &svc, with_admin))
    })
    .workers(workers)
    .backlog(2048)
    .max_connection_rate(1024)
    .keep_alive(Duration::from_secs(30))
    .client_request_timeout(Duration::from_secs(10))
    .client_disconnect_timeout(Duration::from_secs(5))
    .shutdown_timeout(20)
    .listen(listener)?
    .run();
    Ok(server)
}

/// The admin listener: only `/admin` and the static files it uses.
pub fn build_admin_server(
    services: Arc<Services>,
    listener: TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::from(services.clone());
    let svc = services.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(from_fn(middleware::refuse_nul_in_path))
            .wrap(from_fn(middleware::security_headers))
            .wrap(from_fn(middleware::record_metrics))
            .wrap(TracingLogger::<middleware::QuietRootSpan>::new())
            .configure(|cfg| http::configure_admin(cfg, &svc))
            .service(web::resource("/static/{file}").route(web::get().to(ops::static_file)))
            .default_service(web::to(ops::not_found))
    })
    .workers(1)
    .keep_alive(Duration::from_secs(30))
    .client_request_timeout(Duration::from_secs(10))
    .client_disconnect_timeout(Duration::from_secs(5))
    .shutdown_timeout(20)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Delete expired codes, tokens and sessions every hour.
pub async fn housekeeping(services: Arc<Services>) {
    loop {
        let now = services.now();
        let purged = async {
            services.store.purge_expired(now).await?;
            services.store.purge_ceremonies(now).await
        };
        services.ip_limits.shrink();
        if let Err(e) = purged.await {
            tracing::warn!(error = %e, "housekeeping failed");
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// A server running on its own thread (tests and embedding).
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The admin listener, when started with one.
    pub admin_addr: Option<SocketAddr>,
    handle: ServerHandle,
    admin_handle: Option<ServerHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Stop gracefully (in-flight requests finish) and wait for the thread.
    pub async fn stop(mut self) {
        if let Some(h) = &self.admin_handle {
            h.stop(true).await;
        }
        self.handle.stop(true).await;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Start a server on its own thread with its own actix system; migrates first.
pub fn start_server(
    settings: Settings,
    clock: SharedClock,
    listener: TcpListener,
) -> anyhow::Result<RunningServer> {
    start_server_with_admin(settings, clock, listener, None)
}

/// Like [`start_server`], with the admin UI on its own listener when one is given (the
/// settings' `admin_listen` must then be set, so the public listener hides `/admin`).
pub fn start_server_with_admin(
    settings: Settings,
    clock: SharedClock,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
) -> anyhow::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let admin_addr = match &admin_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    type Handles = (ServerHandle, Option<ServerHandle>);
    let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<Handles>>();
    let thread = std::thread::spawn(move || {
        let sys = actix_web::rt::System::new();
        sys.block_on(async move {
            let started = async {
                let services = Services::init(settings, clock).await?;
                services.store.migrate().await?;
                services.tenants_with_keys().await?;
                let admin = match admin_listener {
                    Some(l) => Some(build_admin_server(services.clone(), l)?),
                    None => None,
                };
                let server = build_server(services, listener)?;
                Ok::<_, anyhow::Error>((server, admin))
            }
            .await;
            match started {
                Ok((server, admin)) => {
                    let _ = tx.send(Ok((server.handle(), admin.as_ref().map(|a| a.handle()))));
                    match admin {
                        Some(a) => {
                            let _ = futures_util::future::join(server, a).await;
                        }
                        None => {
                            let _ = server.await;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    let (handle, admin_handle) = rx
        .recv()
        .map_err(|_| anyhow::anyhow!("server thread ended early"))??;
    Ok(RunningServer {
        addr,
        admin_addr,
        handle,
        admin_handle,
        thread: Some(thread),
    })
}
