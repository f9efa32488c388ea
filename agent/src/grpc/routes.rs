//! Which gRPC service a request is for: the first segment of its path
//! (`/berth.v1.Services/Deploy` goes to the `berth.v1.Services` server),
//! matched against the few services the agent serves.
//!
//! tonic's own router (`Server::add_service`) is an axum router; this plain
//! lookup does the same job for the agent's fixed set of services without
//! axum and its path matcher in the binary. A path naming no service gets
//! gRPC's `UNIMPLEMENTED`, as from tonic's router. Holds no state beyond the
//! services it was given; nothing to shut down.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tonic::server::NamedService;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt as _};

type Route = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The services behind the listener, by their full gRPC name.
#[derive(Clone, Default)]
pub struct Routes {
    routes: Vec<(&'static str, Route)>,
}

impl Routes {
    /// Adds `svc` under its gRPC name (`S::NAME`).
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.push((S::NAME, BoxCloneSyncService::new(svc)));
        self
    }

    fn route(&self, path: &str) -> Option<&Route> {
        let (service, _method) = path.strip_prefix('/')?.split_once('/')?;
        self.routes
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, route)| route)
    }
}

impl Service<Request<Body>> for Routes {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call readies a clone of its service (below), as axum does.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match self.route(req.uri().path()) {
            Some(route) => Box::pin(route.clone().oneshot(req)),
            None => Box::pin(std::future::ready(Ok(unimplemented()))),
        }
    }
}

/// What tonic's router answers for a service it does not serve.
fn unimplemented() -> Response<Body> {
    let (parts, ()) = tonic::Status::unimplemented("").into_http::<()>().into_parts();
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Named(&'static str);

    impl NamedService for Named {
        const NAME: &'static str = "berth.v1.Host";
    }

    impl Service<Request<Body>> for Named {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<Body>) -> Self::Future {
            let mut res = Response::new(Body::empty());
            res.headers_mut()
                .insert("x-served-by", http::HeaderValue::from_static(self.0));
            std::future::ready(Ok(res))
        }
    }

    async fn send(routes: &mut Routes, path: &str) -> Response<Body> {
        let req = Request::builder().uri(path).body(Body::empty()).expect("request");
        match routes.call(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn a_call_reaches_the_service_its_path_names() {
        let mut routes = Routes::default().add_service(Named("host"));
        let res = send(&mut routes, "/berth.v1.Host/GetInfo").await;
        assert_eq!(
            res.headers().get("x-served-by").map(|v| v.as_bytes()),
            Some(&b"host"[..])
        );
    }

    #[tokio::test]
    async fn a_path_naming_no_served_service_is_unimplemented() {
        let mut routes = Routes::default().add_service(Named("host"));
        for path in [
            "/berth.v1.Other/GetInfo",
            "/berth.v1.Host",
            "/",
            "/berth.v1.Hostx/GetInfo",
        ] {
            let res = send(&mut routes, path).await;
            assert!(res.headers().get("x-served-by").is_none(), "{path}");
            assert_eq!(
                res.headers().get("grpc-status").map(|v| v.as_bytes()),
                Some(&b"12"[..]),
                "{path}"
            );
        }
    }
}
