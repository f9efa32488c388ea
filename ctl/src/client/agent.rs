//! One agent berthctl talks to, and the one way to call it: connect → call →
//! explain.
//!
//! Owns the per-target handle [`Agent`]: where the agent is, the TLS files
//! that prove who we are, and the channel once dialed. [`Agent::call`] dials
//! on first use (later calls share the channel), runs one RPC given as a
//! closure over the channel, and turns any failure, while dialing or in the
//! call, into the sentence berthctl prints, naming the agent.
//! [`Agent::next`] does the same for each message of a stream.
//!
//! Input: a [`Target`] and [`TlsFiles`]; output: the RPC's reply or a
//! [`ConnectError`]. Making an `Agent` does no I/O, so a fleet can build one
//! per host and call them concurrently, each under its own deadline
//! (`tokio::time::timeout` around `call` bounds the dial too); nothing is
//! shared between two agents. Dropping the `Agent` (and every stream it
//! opened) closes its connection.

use std::future::Future;

use tokio::sync::OnceCell;
use tonic::transport::Channel;
use tonic::{Response, Status, Streaming};

use super::{ConnectError, Target, TlsFiles, dial, explain_status};

/// An agent: its address, our TLS files for it, and the channel once dialed.
#[derive(Debug)]
pub struct Agent {
    /// Where it is.
    pub target: Target,
    /// The TLS files used to reach it.
    pub files: TlsFiles,
    channel: OnceCell<Channel>,
}

impl Agent {
    /// An agent at `target`, reached with `files`. Does not dial yet.
    pub fn new(target: Target, files: TlsFiles) -> Self {
        Agent {
            target,
            files,
            channel: OnceCell::new(),
        }
    }

    /// An agent already dialed, e.g. with [`connect_with`](super::connect_with).
    pub fn with_channel(target: Target, files: TlsFiles, channel: Channel) -> Self {
        Agent {
            target,
            files,
            channel: OnceCell::new_with(Some(channel)),
        }
    }

    /// The channel, dialing the agent the first time.
    pub async fn channel(&self) -> Result<Channel, ConnectError> {
        self.channel
            .get_or_try_init(|| dial::connect(&self.target, &self.files))
            .await
            .cloned()
    }

    /// Dials if needed, runs `rpc` on the channel and returns its reply, or
    /// the failure in words. `rpc` builds the gRPC client it needs, e.g.
    /// `|ch| async move { ServicesClient::new(ch).list(ListRequest {}).await }`;
    /// for a streaming call the reply is the `Streaming` to read with
    /// [`Agent::next`]. A `&F` where `F: Fn` works too, so one closure can
    /// be handed to many agents.
    pub async fn call<T, F, Fut>(&self, rpc: F) -> Result<T, ConnectError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let channel = self.channel().await?;
        rpc(channel)
            .await
            .map(Response::into_inner)
            .map_err(|status| self.explain(&status))
    }

    /// The next message of a stream this agent sends; `None` when the agent
    /// ended it.
    pub async fn next<M>(&self, stream: &mut Streaming<M>) -> Result<Option<M>, ConnectError> {
        stream.message().await.map_err(|status| self.explain(&status))
    }

    /// Turns a failed call's status into a message naming this agent.
    pub fn explain(&self, status: &Status) -> ConnectError {
        explain_status(&self.target, &self.files, status)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn agent(addr: &str) -> Agent {
        let dir = PathBuf::from("/nonexistent-tls");
        Agent::new(
            addr.parse().expect("target"),
            TlsFiles {
                ca: dir.join("ca.pem"),
                cert: dir.join("me.pem"),
                key: dir.join("me-key.pem"),
            },
        )
    }

    #[test]
    fn a_refusal_names_the_agent_and_keeps_its_message() {
        let a = agent("10.0.0.5:7000");
        let err = a.explain(&Status::failed_precondition("web is being deployed; wait for it"));
        assert_eq!(
            err.to_string(),
            "10.0.0.5:7000: refused: web is being deployed; wait for it"
        );
    }

    #[tokio::test]
    async fn a_call_that_cannot_dial_says_why_and_never_runs_the_rpc() {
        // No TLS files: the dial fails before any network I/O, explained.
        let a = agent("127.0.0.1:1");
        let mut ran = false;
        let err = a
            .call(|_ch| {
                ran = true;
                async { Ok(Response::new(())) }
            })
            .await
            .expect_err("cannot dial without TLS files");
        assert!(!ran);
        assert!(err.to_string().contains("cannot read /nonexistent-tls/ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn one_closure_serves_many_agents_and_status_errors_are_explained() {
        let rpc = |_ch: Channel| async { Err::<Response<()>, _>(Status::not_found("no service \"api\"")) };
        for addr in ["10.0.0.1:7443", "10.0.0.2:7443"] {
            let a = agent(addr);
            // A channel that never dials: the rpc above does not use it.
            let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
            let a = Agent::with_channel(a.target, a.files, channel);
            let err = a.call(&rpc).await.expect_err("the rpc fails");
            assert_eq!(err.to_string(), format!("{addr}: not found: no service \"api\""));
        }
    }
}
