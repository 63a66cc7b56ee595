//! Several instances of one actix-web application sharing sessions through m2m, behind any
//! load balancer (sticky or not: a node that does not hold a session fetches it).
//!
//! ```text
//! cargo run -p session-api --features actix --example actix -- web.toml app1 127.0.0.1:8080 [certs-dir]
//! cargo run -p session-api --features actix --example actix -- web.toml app2 127.0.0.1:8081 [certs-dir]
//! curl -c jar -b jar http://127.0.0.1:8080/   # app1: visits 1
//! curl -c jar -b jar http://127.0.0.1:8081/   # app2: visits 2 (app2 fetched the session)
//! ```
//!
//! The HTTP address may be left out when the domain file gives the node one (`http = ...`).
//! Every instance must sign session cookies with the same key: set `M2M_COOKIE_SECRET` to one
//! secret of at least 32 bytes on all of them (without it a key derived from the domain's name
//! is used, for loopback demos only). Without a certificate folder the node runs insecure
//! (loopback demos only). Ctrl-C leaves the domain gracefully: the sessions this instance
//! owns are handed to their backups.
//!
//! Endpoints: `GET /` counts visits (`<node>: visits <n>`); `GET /logout` deletes the session.
//! A session that cannot be reached now answers `503` with `Retry-After`.

use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use session_api::SessionManager;
use session_api::actix::{ActixStore, unavailable_as_503};

async fn visit(node: web::Data<String>, session: Session) -> actix_web::Result<String> {
    let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    session.insert("visits", visits)?;
    Ok(format!("{}: visits {visits}\n", node.as_str()))
}

async fn logout(node: web::Data<String>, session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().body(format!("{}: session invalidated\n", node.as_str()))
}

/// The cookie signing key all instances share.
fn cookie_key(domain: &str) -> Key {
    match std::env::var("M2M_COOKIE_SECRET") {
        Ok(secret) if secret.len() >= 32 => Key::derive_from(secret.as_bytes()),
        _ => {
            eprintln!("warning: M2M_COOKIE_SECRET unset or short: cookies signed with a demo key");
            Key::derive_from(format!("m2m demo cookie key of domain {domain}, loopback only").as_bytes())
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // actix-web serves on its own runtime (a system of single-threaded workers).
    actix_web::rt::System::new().block_on(serve())
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(domain), Some(node)) = (args.first(), args.get(1)) else {
        eprintln!("usage: actix <domain.toml> <node> [<http-address>] [<certs-dir>]");
        std::process::exit(2);
    };
    let builder = SessionManager::builder(domain.as_str(), node);
    let builder = match args.get(3) {
        Some(dir) => builder.certs_dir(dir),
        None => {
            eprintln!("warning: no certificate folder given: replication runs without TLS (loopback only)");
            builder.insecure()
        }
    };
    let sessions = builder.start().await?;
    let domain = sessions.domain();
    let me = domain.nodes.iter().find(|n| n.name.as_str() == node.as_str());
    let Some(http) = args.get(2).cloned().or_else(|| me.and_then(|n| n.http.as_ref()).map(|a| a.to_string()))
    else {
        eprintln!("{node}: no HTTP address: give one, or `http = ...` in the domain file");
        std::process::exit(2);
    };
    let key = cookie_key(&sessions.domain().domain.name);
    let (store, name) = (ActixStore::new(sessions.clone()), web::Data::new(node.clone()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(name.clone())
            .route("/", web::get().to(visit))
            .route("/logout", web::get().to(logout))
            .wrap(SessionMiddleware::builder(store.clone(), key.clone()).cookie_secure(false).build())
            // Registered last, so it runs first: it sees the 500 of a store error.
            .wrap(from_fn(unavailable_as_503))
    })
    .bind(&http)?;
    println!("{node}: http on {http}");
    // actix-web stops on Ctrl-C by itself.
    server.run().await?;
    let report = sessions.shutdown().await?;
    println!(
        "{node}: left the domain ({} sessions handed off, {} unreplicated)",
        report.handed_off, report.unreplicated
    );
    Ok(())
}
