//! The job queue on Pub/Sub, through the official `google-cloud-pubsub` client: a batching
//! publisher, a streaming-pull subscriber with flow control, and the subscription's own
//! dead-letter policy for jobs that keep failing.
//!
//! The client does not read `PUBSUB_EMULATOR_HOST`; [`PubsubConfig::default`] does, and
//! [`PubsubQueue::connect`] then points the client at the emulator with anonymous
//! credentials.
//!
//! Delivery attempts come from the subscription's dead-letter policy (Pub/Sub counts them
//! only when one is set). Without one, every delivery reports attempt 1 and jobs are never
//! dead-lettered by count, so [`PubsubQueue::connect`] refuses a subscription without it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_auth::credentials::{self, Credentials};
use google_cloud_pubsub::client::{
    BasePublisher, Publisher, Subscriber, SubscriptionAdmin, TopicAdmin,
};
use google_cloud_pubsub::subscriber::MessageStream;
use google_cloud_pubsub::subscriber::handler::Handler;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Delivery, FlowControl, JobQueue, Message, Settle, Subscription};
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::iam::{Method as Call, Resource};
use crate::telemetry::metrics::METRICS;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
/// Where the topics and subscriptions are and how to reach them.
pub struct PubsubConfig {
    /// The Google Cloud project of the topics and subscriptions.
    pub project: String,
    /// Where scanners publish cleanup jobs.
    pub topic: String,
    /// What cleaners pull from; must have a dead-letter policy.
    pub subscription: String,
    /// Where poison jobs go at once (and where the dead-letter policy sends the rest).
    pub dead_letter_topic: String,
    /// The subscription of the dead-letter topic that keeps dead letters for operators
    /// (`tiersweep dlq`).
    pub dead_letter_subscription: String,
    /// Where `tiersweep audit --fan-out` publishes range jobs.
    pub audit_topic: String,
    /// What `tiersweep audit --worker` pulls from; must have a dead-letter policy.
    pub audit_subscription: String,
    /// Where audit workers dead-letter the range jobs they refuse (forged, stale).
    pub audit_dead_letter_topic: String,
    /// Where `tiersweep audit --trail-topic` records each deletion it requests.
    pub audit_trail_topic: String,
    /// `host:port` of an emulator; unset means Cloud Pub/Sub with Application Default
    /// Credentials. Defaults to `PUBSUB_EMULATOR_HOST`.
    pub emulator_host: Option<String>,
    /// Messages per publish request (the client also sends when 10 ms have passed).
    pub publish_batch: u32,
    /// How far the subscriber extends a delivery's deadline at a time (10 s – 10 min). A
    /// job held by a cleaner that died comes back to the pool this long after the last
    /// extension, whatever the subscription's own ack deadline says.
    #[serde(with = "crate::duration")]
    pub lease_extension: Duration,
    /// How long a publish (and each start-up check) may take before it fails as
    /// transient. The client library sets no deadline of its own, so without one a
    /// publish on a stalled connection would hold its scanner forever. A publish given up
    /// on may still be delivered: jobs are at-least-once anyway.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        Self {
            project: "tiersweep-local".into(),
            topic: "cleanup-jobs".into(),
            subscription: "cleanup-workers".into(),
            dead_letter_topic: "cleanup-jobs-dead-letter".into(),
            dead_letter_subscription: "cleanup-jobs-dead-letter-audit".into(),
            audit_topic: "audit-jobs".into(),
            audit_subscription: "audit-workers".into(),
            audit_dead_letter_topic: "audit-jobs-dead-letter".into(),
            audit_trail_topic: "audit-trail".into(),
            emulator_host: std::env::var("PUBSUB_EMULATOR_HOST").ok(),
            publish_batch: 100,
            lease_extension: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        }
    }
}

impl PubsubConfig {
    fn topic_path(&self, topic: &str) -> String {
        format!("projects/{}/topics/{topic}", self.project)
    }

    fn subscription_path(&self, subscription: &str) -> String {
        format!("projects/{}/subscriptions/{subscription}", self.project)
    }
}

#[derive(Debug, Clone)]
/// The job queue on Pub/Sub; what it checks at start depends on what it was connected for
/// (`connect`, `connect_publisher`, …).
pub struct PubsubQueue {
    jobs: Publisher,
    /// The jobs topic, for the call meter and the IAM contract.
    jobs_resource: Resource,
    dead_letters: Publisher,
    dead_letter_resource: Resource,
    subscriber: Subscriber,
    subscription: String,
    /// What the subscription is, for the call meter and the IAM contract.
    subscription_resource: Resource,
    topic: String,
    dead_letter_topic: String,
    lease_extension: Duration,
    /// The subscription's dead-letter policy's delivery limit (cleaners' connections only).
    max_delivery_attempts: Option<u32>,
    /// [`PubsubConfig::timeout`].
    timeout: Duration,
    /// Unary pull instead of a streaming pull (the dead-letter tools' connections).
    unary: Option<super::pull::RestPull>,
}

/// `call`'s output, or why there is none: `timeout` passed first. The client library sets
/// no deadline of its own on these calls.
async fn answered<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer within {timeout:?} (pubsub.timeout)"))
}

fn queue_error(op: &'static str, target: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        StoreKind::Queue,
        op,
        target,
        ErrorKind::Transient,
        e.to_string(),
    )
}

/// What a queue is connected for, and so what [`PubsubQueue`] checks at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Publish jobs (scanners): the jobs topic must exist.
    Publish,
    /// Consume jobs and dead-letter poison ones (cleaners): the subscription must exist
    /// and have a dead-letter policy.
    Consume,
    /// Read the dead letters and republish to the jobs topic (`tiersweep dlq`): the
    /// dead-letter subscription must exist.
    DeadLetters,
    /// Publish audit range jobs (`tiersweep audit --fan-out`): the audit topic must exist.
    AuditPublish,
    /// Consume audit range jobs (`tiersweep audit --worker`): the audit subscription must
    /// exist and have a dead-letter policy.
    AuditConsume,
    /// Publish the audit trail (`--trail-topic`): the trail topic must exist.
    AuditTrail,
}

/// The topics and subscription a connection uses, with what the call meter calls them.
struct Names {
    topic: (String, Resource),
    subscription: (String, Resource),
    dead_letter_topic: (String, Resource),
}

impl Purpose {
    fn names(self, config: &PubsubConfig) -> Names {
        let topic = |name: &str, r| (config.topic_path(name), r);
        let sub = |name: &str, r| (config.subscription_path(name), r);
        match self {
            Purpose::AuditTrail => Names {
                topic: topic(&config.audit_trail_topic, Resource::AuditTrailTopic),
                // Never used: a trail is published, never pulled or dead-lettered.
                subscription: sub(&config.audit_subscription, Resource::AuditSubscription),
                dead_letter_topic: topic(&config.audit_trail_topic, Resource::AuditTrailTopic),
            },
            Purpose::AuditPublish | Purpose::AuditConsume => Names {
                topic: topic(&config.audit_topic, Resource::AuditTopic),
                subscription: sub(&config.audit_subscription, Resource::AuditSubscription),
                dead_letter_topic: topic(
                    &config.audit_dead_letter_topic,
                    Resource::AuditDeadLetterTopic,
                ),
            },
            Purpose::Publish | Purpose::Consume | Purpose::DeadLetters => Names {
                topic: topic(&config.topic, Resource::JobsTopic),
                subscription: if self == Purpose::DeadLetters {
                    sub(
                        &config.dead_letter_subscription,
                        Resource::DeadLetterSubscription,
                    )
                } else {
                    sub(&config.subscription, Resource::Subscription)
                },
                dead_letter_topic: topic(&config.dead_letter_topic, Resource::DeadLetterTopic),
            },
        }
    }
}

impl PubsubQueue {
    /// Connects a cleaner's queue: builds the clients and checks that the subscription
    /// exists and has a dead-letter policy, so that a wrong name or a subscription that
    /// would retry poison jobs forever fails at start, by name. Needs
    /// `pubsub.subscriptions.get` on the subscription (`roles/pubsub.viewer` there).
    pub async fn connect(config: &PubsubConfig) -> StoreResult<Self> {
        Self::connect_for(config, Purpose::Consume).await
    }

    /// Connects a scanner's queue: builds the clients and checks that the jobs topic
    /// exists. Nothing about the subscription is read: a scanner is granted the topic
    /// only. Needs `pubsub.topics.get` on the topic (`roles/pubsub.viewer` there).
    pub async fn connect_publisher(config: &PubsubConfig) -> StoreResult<Self> {
        Self::connect_for(config, Purpose::Publish).await
    }

    /// Connects the operator's view of the dead letters: `JobQueue::subscribe` reads
    /// the dead-letter subscription, `JobQueue::publish` replays to the jobs topic. Checks
    /// that the subscription exists (`pubsub.subscriptions.get` on it).
    pub async fn connect_dead_letters(config: &PubsubConfig) -> StoreResult<Self> {
        Self::connect_for(config, Purpose::DeadLetters).await
    }

    /// Connects `tiersweep audit --fan-out`'s queue: range jobs go to the audit topic,
    /// which must exist (`pubsub.topics.get` on it).
    pub async fn connect_audit_publisher(config: &PubsubConfig) -> StoreResult<Self> {
        Self::connect_for(config, Purpose::AuditPublish).await
    }

    /// Connects `tiersweep audit --worker`'s queue: the audit subscription, which must
    /// exist and have a dead-letter policy; refused jobs go to the audit dead-letter topic.
    pub async fn connect_audit_worker(config: &PubsubConfig) -> StoreResult<Self> {
        Self::connect_for(config, Purpose::AuditConsume).await
    }

    /// Connects the audit trail's publisher (`--trail-topic`): the trail topic must exist
    /// (`pubsub.topics.get` on it).
    pub async fn connect_audit_trail(config: &PubsubConfig) -> StoreResult<Self> {
        Self::connect_for(config, Purpose::AuditTrail).await
    }

    async fn connect_for(config: &PubsubConfig, purpose: Purpose) -> StoreResult<Self> {
        let names = purpose.names(config);
        let (subscription, subscription_resource) = names.subscription.clone();
        let (topic, jobs_resource) = names.topic.clone();
        let target = match purpose {
            Purpose::Publish | Purpose::AuditPublish | Purpose::AuditTrail => topic.clone(),
            Purpose::Consume | Purpose::DeadLetters | Purpose::AuditConsume => subscription.clone(),
        };
        let fail = |kind, message: String| {
            StoreError::new(StoreKind::Queue, "connect", target.clone(), kind, message)
        };
        let (endpoint, creds) = endpoint_and_credentials(config);
        macro_rules! configure {
            ($builder:expr) => {{
                let mut b = $builder;
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(c) = &creds {
                    b = b.with_credentials(c.clone());
                }
                b.build()
                    .await
                    .map_err(|e| fail(ErrorKind::Permanent, format!("building the client: {e}")))?
            }};
        }
        let base: BasePublisher = configure!(BasePublisher::builder());
        let subscriber: Subscriber = configure!(Subscriber::builder());
        let mut max_delivery_attempts = None;
        match purpose {
            Purpose::Publish | Purpose::AuditPublish | Purpose::AuditTrail => {
                let admin: TopicAdmin = configure!(TopicAdmin::builder());
                check_topic(config, &admin, &topic, jobs_resource, &fail).await?;
            }
            Purpose::Consume | Purpose::AuditConsume | Purpose::DeadLetters => {
                let admin: SubscriptionAdmin = configure!(SubscriptionAdmin::builder());
                max_delivery_attempts = check_subscription(
                    config,
                    &admin,
                    purpose,
                    &subscription,
                    subscription_resource,
                    &fail,
                )
                .await?;
            }
        }
        let publisher = |topic: &str| publisher(&base, topic, config.publish_batch);
        let unary = match purpose {
            Purpose::DeadLetters => Some(rest_pull(
                config,
                endpoint.as_deref(),
                &subscription,
                subscription_resource,
                &fail,
            )?),
            _ => None,
        };
        let (dead_letter_topic, dead_letter_resource) = names.dead_letter_topic;
        Ok(Self {
            jobs: publisher(&topic),
            jobs_resource,
            dead_letters: publisher(&dead_letter_topic),
            dead_letter_resource,
            subscriber,
            subscription,
            subscription_resource,
            topic,
            dead_letter_topic,
            lease_extension: config.lease_extension,
            max_delivery_attempts,
            unary,
            timeout: config.timeout,
        })
    }

    /// After how many deliveries the subscription forwards a job to its dead-letter topic,
    /// as its policy says (cleaners' connections). A cleaner must dead-letter a failing job
    /// itself, with its reason, on that last delivery; `recovery.max_delivery_attempts`
    /// has to equal it.
    pub fn max_delivery_attempts(&self) -> Option<u32> {
        self.max_delivery_attempts
    }

    async fn publish_to(
        &self,
        publisher: &Publisher,
        topic: &str,
        resource: Resource,
        batch: Vec<Message>,
    ) -> StoreResult<Vec<String>> {
        // The emulator enforces none of Pub/Sub's limits; refuse here what Pub/Sub would.
        for m in &batch {
            m.check_limits().map_err(|e| {
                StoreError::new(
                    StoreKind::Queue,
                    "publish",
                    topic,
                    ErrorKind::Permanent,
                    format!("message over Pub/Sub's limits: {e}"),
                )
            })?;
        }
        // Counted per message: the client batches them into fewer requests.
        for _ in &batch {
            crate::iam::record(Call::PubsubPublish, resource);
        }
        let pending: Vec<_> = batch
            .into_iter()
            .map(|m| {
                let msg = google_cloud_pubsub::model::Message::new()
                    .set_data(m.data)
                    .set_attributes(m.attributes);
                publisher.publish(msg)
            })
            .collect();
        let sent = async {
            publisher.flush().await;
            futures::future::join_all(pending).await
        };
        let Ok(results) = tokio::time::timeout(self.timeout, sent).await else {
            return Err(queue_error(
                "publish",
                topic,
                format!(
                    "no answer within {:?} (pubsub.timeout); the messages may still be published",
                    self.timeout
                ),
            ));
        };
        let mut ids = Vec::with_capacity(results.len());
        for result in results {
            ids.push(result.map_err(|e| queue_error("publish", topic, e))?);
        }
        Ok(ids)
    }
}

#[async_trait]
impl JobQueue for PubsubQueue {
    fn destination(&self) -> String {
        self.topic.clone()
    }

    fn subscription(&self) -> String {
        self.subscription.clone()
    }

    async fn publish(&self, batch: Vec<Message>) -> StoreResult<()> {
        self.publish_to(&self.jobs, &self.topic, self.jobs_resource, batch)
            .await
            .map(drop)
    }

    async fn subscribe(&self, flow: FlowControl) -> StoreResult<Box<dyn Subscription>> {
        if let Some(unary) = &self.unary {
            return Ok(unary.subscribe(flow));
        }
        let opener = StreamOpener {
            subscriber: self.subscriber.clone(),
            subscription: self.subscription.clone(),
            resource: self.subscription_resource,
            flow,
            lease_extension: self.lease_extension,
        };
        Ok(Box::new(PubsubSubscription {
            stream: opener.open(),
            opener,
            permits: Arc::new(Semaphore::new(flow.max_outstanding.max(1))),
            closing: None,
        }))
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> StoreResult<()> {
        let message = delivery
            .message
            .dead_letter_copy(reason, &delivery.message_id);
        // Published before the ack: if the publish fails, the delivery is nacked (dropped)
        // and comes back, so a poison job is never lost between the two topics.
        self.publish_to(
            &self.dead_letters,
            &self.dead_letter_topic,
            self.dead_letter_resource,
            vec![message],
        )
        .await?;
        delivery.ack();
        Ok(())
    }
}

/// What a streaming pull is opened with, kept to open it again.
struct StreamOpener {
    subscriber: Subscriber,
    subscription: String,
    resource: Resource,
    flow: FlowControl,
    lease_extension: Duration,
}

impl StreamOpener {
    fn open(&self) -> MessageStream {
        crate::iam::record(Call::PubsubStreamingPull, self.resource);
        let flow = self.flow;
        self.subscriber
            .subscribe(self.subscription.clone())
            .set_max_outstanding_messages(i64::try_from(flow.max_outstanding).unwrap_or(i64::MAX))
            .set_max_outstanding_bytes(
                i64::try_from(flow.max_outstanding_bytes).unwrap_or(i64::MAX),
            )
            .set_max_lease_extension(self.lease_extension)
            // Only a one-shot run shuts a stream down (`stop_pulling`, then settle, then
            // `close`): the deliveries in hand can still be settled meanwhile.
            .set_shutdown_behavior(
                google_cloud_pubsub::subscriber::ShutdownBehavior::WaitForProcessing,
            )
            .build()
    }
}

/// Pub/Sub enforces flow control on the server, which the emulator does not do; a permit
/// per unsettled delivery enforces it here too, so the bound holds wherever we run.
///
/// The client ends a [`MessageStream`] (`None`) when the server closes the streaming pull
/// without an error, which its docs say does not happen in practice; when it does (the
/// emulator), a worker must not quietly stop pulling, so a new stream is opened. Deliveries
/// of the old one stay valid: their handlers settle through its lease loop.
struct PubsubSubscription {
    stream: MessageStream,
    opener: StreamOpener,
    permits: Arc<Semaphore>,
    /// The stream's shutdown, once [`Subscription::stop_pulling`] signalled it.
    closing: Option<futures::future::BoxFuture<'static, ()>>,
}

#[async_trait]
impl Subscription for PubsubSubscription {
    async fn next(&mut self) -> Option<StoreResult<Delivery>> {
        // Cancellation-safe: a permit acquired and then dropped with the future is returned.
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        let (message, handler) = loop {
            match self.stream.next().await {
                Some(Ok(pair)) => break pair,
                Some(Err(e)) => {
                    return Some(Err(queue_error(
                        "StreamingPull",
                        &self.opener.subscription,
                        e,
                    )));
                }
                None => {
                    METRICS.pull_streams_reopened.inc();
                    tracing::warn!(subscription = %self.opener.subscription,
                        "the streaming pull ended without an error; opening a new one");
                    // Not a tight loop if the server keeps ending streams at once.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.stream = self.opener.open();
                }
            }
        };
        let attempt = handler
            .delivery_attempt()
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(1)
            .max(1);
        let attributes: BTreeMap<String, String> = message.attributes.into_iter().collect();
        let published = message.publish_time.map(|t| {
            crate::model::Timestamp(t.seconds() * 1000 + i64::from(t.nanos()) / 1_000_000)
        });
        let delivery = Delivery::new(
            message.message_id,
            attempt,
            Message {
                data: message.data,
                attributes,
            },
            Box::new(PubsubHandle {
                handler,
                resource: self.opener.resource,
                _permit: permit,
            }),
        );
        Some(Ok(match published {
            Some(at) => delivery.published_at(at),
            None => delivery,
        }))
    }

    async fn stop_pulling(&mut self) {
        if self.closing.is_none() {
            let token = self.stream.shutdown_token();
            let mut closing: futures::future::BoxFuture<'static, ()> =
                Box::pin(async move { token.shutdown().await });
            // The first poll signals the shutdown; the rest completes in `close`. A
            // shutdown that completed at once must not be polled again there (an `async`
            // block polled after completion panics).
            if futures::poll!(&mut closing).is_ready() {
                closing = Box::pin(async {});
            }
            self.closing = Some(closing);
        }
    }

    async fn close(&mut self) {
        self.stop_pulling().await;
        if let Some(closing) = self.closing.take() {
            closing.await;
        }
    }
}

/// Settles one delivery; its flow-control permit is released when it is dropped.
#[derive(Debug)]
struct PubsubHandle {
    handler: Handler,
    resource: Resource,
    _permit: OwnedSemaphorePermit,
}

impl Settle for PubsubHandle {
    fn ack(self: Box<Self>) {
        crate::iam::record(Call::PubsubAcknowledge, self.resource);
        self.handler.ack();
    }

    fn nack(self: Box<Self>) {
        crate::iam::record(Call::PubsubModifyAckDeadline, self.resource);
        self.handler.nack();
    }
}

/// The emulator's endpoint and anonymous credentials (the client libraries ignore
/// `PUBSUB_EMULATOR_HOST`), or neither: Cloud Pub/Sub with Application Default Credentials.
fn endpoint_and_credentials(config: &PubsubConfig) -> (Option<String>, Option<Credentials>) {
    match &config.emulator_host {
        Some(host) => (
            Some(format!("http://{host}")),
            Some(credentials::anonymous::Builder::new().build()),
        ),
        None => (None, None),
    }
}

/// A publisher to `topic` that sends in batches of up to `batch` messages, or after 10 ms.
fn publisher(base: &BasePublisher, topic: &str, batch: u32) -> Publisher {
    base.publisher(topic.to_owned())
        .set_message_count_threshold(batch.max(1))
        .set_delay_threshold(Duration::from_millis(10))
        .build()
}

/// The dead-letter tools' unary pulls, over REST. Against Cloud Pub/Sub they authenticate
/// with Application Default Credentials, as the client library does.
fn rest_pull(
    config: &PubsubConfig,
    endpoint: Option<&str>,
    subscription: &str,
    resource: Resource,
    fail: &impl Fn(ErrorKind, String) -> StoreError,
) -> StoreResult<super::pull::RestPull> {
    let credentials = match &config.emulator_host {
        None => Some(
            credentials::Builder::default()
                .build()
                .map_err(|e| fail(ErrorKind::Permanent, format!("loading credentials: {e}")))?,
        ),
        Some(_) => None,
    };
    Ok(super::pull::RestPull {
        http: reqwest::Client::new(),
        endpoint: endpoint
            .unwrap_or("https://pubsub.googleapis.com")
            .to_owned(),
        subscription: subscription.to_owned(),
        resource,
        credentials,
    })
}

/// A missing topic or subscription is the deployment's to fix, not a retry's.
fn not_found_is_permanent(e: &google_cloud_pubsub::Error) -> ErrorKind {
    if e.status()
        .is_some_and(|s| s.code == google_cloud_gax::error::rpc::Code::NotFound)
    {
        ErrorKind::Permanent
    } else {
        ErrorKind::Transient
    }
}

/// Checks that the topic a publisher sends to exists (and that this process may read it).
async fn check_topic(
    config: &PubsubConfig,
    admin: &TopicAdmin,
    topic: &str,
    resource: Resource,
    fail: &impl Fn(ErrorKind, String) -> StoreError,
) -> StoreResult<()> {
    crate::iam::record(Call::PubsubGetTopic, resource);
    answered(config.timeout, admin.get_topic().set_topic(topic.to_owned()).send())
        .await
        .map_err(|d| fail(ErrorKind::Transient, d))?
        .map_err(|e| {
            fail(
                not_found_is_permanent(&e),
                format!("cannot read the topic ({e}); create it with infra/local/provision.sh or infra/terraform"),
            )
        })?;
    Ok(())
}

/// Checks that the subscription a consumer pulls from exists and, unless it is the
/// dead-letter subscription (which has no policy of its own), that it has a dead-letter
/// policy; returns the policy's delivery attempts.
async fn check_subscription(
    config: &PubsubConfig,
    admin: &SubscriptionAdmin,
    purpose: Purpose,
    subscription: &str,
    resource: Resource,
    fail: &impl Fn(ErrorKind, String) -> StoreError,
) -> StoreResult<Option<u32>> {
    let what = match purpose {
        Purpose::DeadLetters => "the dead-letter subscription",
        _ => "the subscription",
    };
    crate::iam::record(Call::PubsubGetSubscription, resource);
    let found = answered(
        config.timeout,
        admin
            .get_subscription()
            .set_subscription(subscription.to_owned())
            .send(),
    )
    .await
    .map_err(|d| fail(ErrorKind::Transient, d))?
    .map_err(|e| {
        fail(
            not_found_is_permanent(&e),
            format!("cannot read {what} ({e}); create it with infra/local/provision.sh or infra/terraform"),
        )
    })?;
    if purpose == Purpose::DeadLetters {
        return Ok(None);
    }
    let policy = found
        .dead_letter_policy
        .as_ref()
        .filter(|p| !p.dead_letter_topic.is_empty());
    if policy.is_none() {
        return Err(fail(
            ErrorKind::Permanent,
            "the subscription has no dead-letter policy: jobs that keep failing would be retried \
             forever and delivery attempts are not counted; set one (see infra/local/provision.sh)"
                .into(),
        ));
    }
    Ok(policy
        .and_then(|p| u32::try_from(p.max_delivery_attempts).ok())
        .filter(|n| *n > 0))
}
