//! Unary pull over Pub/Sub's REST API, for one-shot readers of a subscription
//! (`tiersweep dlq`). A streaming pull suits a worker that runs for hours; a process that
//! takes a snapshot and exits does better without one: nothing is prefetched behind its
//! back, and its acks and nacks are sent, synchronously, before it returns. (The Pub/Sub
//! emulator also keeps handing messages to the streaming pull of a process that has exited;
//! unary pull has no stream to strand them on.)
//!
//! Messages pulled are held for [`HOLD`] (their ack deadline is moved on at once), and
//! settled in batches by [`Subscription::close`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Delivery, FlowControl, Message, Settle, Subscription};
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::iam::{Method as Call, Resource};
use crate::model::Timestamp;

/// How long a pulled message stays leased to the snapshot (its ack deadline is set to
/// this at once; 600 s is Pub/Sub's maximum).
pub const HOLD: Duration = Duration::from_secs(600);

/// Where and how to call the REST API.
#[derive(Debug, Clone)]
pub(crate) struct RestPull {
    pub http: reqwest::Client,
    /// `http://host:port` (emulator) or `https://pubsub.googleapis.com`.
    pub endpoint: String,
    /// `projects/{p}/subscriptions/{s}`.
    pub subscription: String,
    pub resource: Resource,
    /// `None` against the emulator.
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Default)]
struct Settlements {
    acks: Vec<String>,
    nacks: Vec<String>,
}

pub(crate) struct RestSubscription {
    pull: RestPull,
    ready: std::collections::VecDeque<(Delivery, OwnedSemaphorePermit)>,
    permits: Arc<Semaphore>,
    settled: Arc<Mutex<Settlements>>,
}

impl RestPull {
    pub(crate) fn subscribe(&self, flow: FlowControl) -> Box<dyn Subscription> {
        Box::new(RestSubscription {
            pull: self.clone(),
            ready: Default::default(),
            permits: Arc::new(Semaphore::new(flow.max_outstanding.max(1))),
            settled: Arc::default(),
        })
    }

    async fn call(
        &self,
        verb: &'static str,
        body: serde_json::Value,
    ) -> StoreResult<serde_json::Value> {
        let fail = |kind, message: String| {
            StoreError::new(StoreKind::Queue, verb, &self.subscription, kind, message)
        };
        let mut request = self
            .http
            .post(format!("{}/v1/{}:{verb}", self.endpoint, self.subscription))
            .json(&body);
        if let Some(creds) = &self.credentials {
            match creds.headers(http::Extensions::new()).await {
                Ok(CacheableResource::New { data, .. }) => request = request.headers(data),
                Ok(CacheableResource::NotModified) => {}
                Err(e) => return Err(fail(ErrorKind::Transient, format!("credentials: {e}"))),
            }
        }
        let response = request
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| fail(ErrorKind::Transient, e.to_string()))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let kind = if status.is_client_error() {
                ErrorKind::Permanent
            } else {
                ErrorKind::Transient
            };
            return Err(fail(kind, format!("HTTP {status}: {text}")));
        }
        serde_json::from_str(if text.trim().is_empty() { "{}" } else { &text })
            .map_err(|e| fail(ErrorKind::Malformed, format!("unreadable response: {e}")))
    }

    async fn settle(&self, acks: Vec<String>, nacks: Vec<String>) -> StoreResult<()> {
        for chunk in acks.chunks(1000) {
            for _ in chunk {
                crate::iam::record(Call::PubsubAcknowledge, self.resource);
            }
            self.call("acknowledge", serde_json::json!({ "ackIds": chunk }))
                .await?;
        }
        for chunk in nacks.chunks(1000) {
            for _ in chunk {
                crate::iam::record(Call::PubsubModifyAckDeadline, self.resource);
            }
            self.call(
                "modifyAckDeadline",
                serde_json::json!({ "ackIds": chunk, "ackDeadlineSeconds": 0 }),
            )
            .await?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pulled {
    #[serde(default)]
    received_messages: Vec<Received>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Received {
    ack_id: String,
    message: Wire,
    #[serde(default)]
    delivery_attempt: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    data: String,
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    publish_time: Option<String>,
}

#[derive(Debug)]
struct RestHandle {
    ack_id: String,
    settled: Arc<Mutex<Settlements>>,
}

impl Settle for RestHandle {
    fn ack(self: Box<Self>) {
        let mut s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        s.acks.push(self.ack_id);
    }
    fn nack(self: Box<Self>) {
        let mut s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        s.nacks.push(self.ack_id);
    }
}

impl RestSubscription {
    /// One pull of up to as many messages as flow control has room for; holds them.
    async fn fill(&mut self) -> StoreResult<()> {
        let room = self.permits.available_permits().clamp(1, 1000);
        crate::iam::record(Call::PubsubPull, self.pull.resource);
        let body = self
            .pull
            .call(
                "pull",
                serde_json::json!({ "maxMessages": room, "returnImmediately": true }),
            )
            .await?;
        let pulled: Pulled = serde_json::from_value(body).map_err(|e| {
            StoreError::new(
                StoreKind::Queue,
                "pull",
                &self.pull.subscription,
                ErrorKind::Malformed,
                format!("unreadable pull response: {e}"),
            )
        })?;
        if pulled.received_messages.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = pulled
            .received_messages
            .iter()
            .map(|r| r.ack_id.as_str())
            .collect();
        for _ in &ids {
            crate::iam::record(Call::PubsubModifyAckDeadline, self.pull.resource);
        }
        self.pull
            .call(
                "modifyAckDeadline",
                serde_json::json!({ "ackIds": ids, "ackDeadlineSeconds": HOLD.as_secs() }),
            )
            .await?;
        for r in pulled.received_messages {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                // More than asked for: leave it to come back after its deadline... or now.
                self.settled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .nacks
                    .push(r.ack_id);
                continue;
            };
            let data = base64::engine::general_purpose::STANDARD
                .decode(r.message.data.as_bytes())
                .unwrap_or_default();
            let delivery = Delivery::new(
                r.message.message_id,
                r.delivery_attempt.unwrap_or(1).max(1),
                Message {
                    data: data.into(),
                    attributes: r.message.attributes,
                },
                Box::new(RestHandle {
                    ack_id: r.ack_id,
                    settled: self.settled.clone(),
                }),
            );
            let delivery = match r
                .message
                .publish_time
                .as_deref()
                .and_then(|t| Timestamp::parse_rfc3339(t).ok())
            {
                Some(at) => delivery.published_at(at),
                None => delivery,
            };
            self.ready.push_back((delivery, permit));
        }
        Ok(())
    }
}

#[async_trait]
impl Subscription for RestSubscription {
    async fn next(&mut self) -> Option<StoreResult<Delivery>> {
        loop {
            if let Some((delivery, permit)) = self.ready.pop_front() {
                // The permit counts the delivery as held until the snapshot is closed.
                std::mem::forget(permit);
                return Some(Ok(delivery));
            }
            if self.permits.available_permits() == 0 {
                // Flow control: wait for room that only a close gives back.
                std::future::pending::<()>().await;
            }
            if let Err(e) = self.fill().await {
                return Some(Err(e));
            }
            if self.ready.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn close(&mut self) {
        let (acks, nacks) = {
            let mut s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut s.acks), std::mem::take(&mut s.nacks))
        };
        if let Err(e) = self.pull.settle(acks, nacks).await {
            tracing::warn!(error = %e,
                "settling pulled messages failed; they come back after their ack deadline");
        }
    }
}
