//! The `berth.v1.Audit` service: the audit log read back, for operators.
//!
//! Owns reading the files [`crate::audit::Audit::files`] hands over (a
//! consistent cut, oldest first) and sending their lines as written, in
//! batches, from the blocking pool. The chain is checked by the reader
//! (`berthctl audit --verify`), so a tampered agent cannot vouch for
//! itself. The stream ends at the end of the log, or when the agent shuts
//! down or the caller goes away.

use std::io::{BufRead as _, Read as _};

use berth_core::audit as chain;
use berth_proto::v1::audit_server::Audit as AuditService;
use berth_proto::v1::{AuditLine, AuditLines, ReadAuditRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::services::{BoxStream, Streams};
use crate::audit::Audit;

/// Lines per message, and the bytes after which a batch is sent early;
/// both keep a message far below gRPC's 4 MiB limit.
const BATCH_LINES: usize = 2_000;
const BATCH_BYTES: usize = 1024 * 1024;

/// Batches in flight to a slow reader.
const QUEUE: usize = 4;

/// The Audit API.
pub struct AuditApi {
    audit: Audit,
    streams: Streams,
}

impl AuditApi {
    /// Serves `audit`; readers run on `streams`.
    pub fn new(audit: Audit, streams: Streams) -> Self {
        AuditApi { audit, streams }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    type ReadAuditStream = BoxStream<AuditLines>;

    async fn read_audit(&self, request: Request<ReadAuditRequest>) -> Result<Response<Self::ReadAuditStream>, Status> {
        super::require_operator(&request)?;
        let since_ms = request.into_inner().since_ms;
        let files = self
            .audit
            .files()
            .map_err(|e| Status::internal(format!("cannot open the audit log: {e}")))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let cancel = self.streams.cancel.clone();
        let reader = tokio::task::spawn_blocking(move || send_lines(files, since_ms, &tx, &cancel));
        // Tracked so shutdown waits for the reader to notice and stop.
        self.streams.tracker.spawn(async move {
            let _ = reader.await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

type Tx = mpsc::Sender<Result<AuditLines, Status>>;

fn send_lines(
    files: Vec<(String, std::fs::File, u64)>,
    since_ms: u64,
    tx: &Tx,
    cancel: &tokio_util::sync::CancellationToken,
) {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for (name, file, len) in files {
        let reader = std::io::BufReader::new(file.take(len));
        for (i, raw) in reader.split(b'\n').enumerate() {
            let raw = match raw {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(format!("cannot read {name}: {e}"))));
                    return;
                }
            };
            // A line no agent wrote; cut so the message stays small (the
            // verifier still sees it is too long).
            let raw = &raw[..raw.len().min(chain::MAX_LINE + 1)];
            let text = String::from_utf8_lossy(raw).into_owned();
            if since_ms > 0 && chain::open(&text).is_ok_and(|s| s.record.ts_ms < since_ms) {
                continue;
            }
            bytes += text.len();
            batch.push(AuditLine {
                file: name.clone(),
                line: i as u64 + 1,
                text,
            });
            if batch.len() >= BATCH_LINES || bytes >= BATCH_BYTES {
                if cancel.is_cancelled()
                    || tx
                        .blocking_send(Ok(AuditLines {
                            lines: std::mem::take(&mut batch),
                        }))
                        .is_err()
                {
                    return;
                }
                bytes = 0;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Ok(AuditLines { lines: batch }));
    }
}
