//! The IAM contract between the code and `infra/terraform`: every call tiersweep makes to a
//! Google Cloud service, the permissions that call needs, and what each role calls.
//!
//! The emulators enforce no IAM, so a worker that calls something its service account was
//! not granted works everywhere but in production. To keep that from happening silently,
//! every call is counted where it is sent (the Bigtable, GCS and Pub/Sub backends call
//! `record`), a process reports what it called when it exits ([`calls_made`], logged by
//! the `tiersweep` binary), and a test runs each role against the
//! emulators and checks the calls it made against what `infra/terraform/iam.tf` grants
//! that role, through [`Method::permissions`] and [`PREDEFINED_ROLES`].
//!
//! The counts are also exported as the `tiersweep.gcp.calls` metric: they are what a
//! deployment pays for, per call and resource.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a call acts on. Names match the resources in `infra/terraform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// The HV table (`bigtable.hv_table`).
    HvTable,
    /// The changelog table (`bigtable.changelog_table`).
    ChangelogTable,
    /// The LT bucket (`gcs.bucket`).
    Bucket,
    /// The cleanup-jobs topic (`pubsub.topic`).
    JobsTopic,
    /// The dead-letter topic (`pubsub.dead_letter_topic`).
    DeadLetterTopic,
    /// The cleaners' subscription (`pubsub.subscription`).
    Subscription,
    /// The subscription that keeps dead letters for operators
    /// (`pubsub.dead_letter_subscription`).
    DeadLetterSubscription,
    /// The audit range-jobs topic (`pubsub.audit_topic`).
    AuditTopic,
    /// The audit workers' subscription (`pubsub.audit_subscription`).
    AuditSubscription,
    /// Where audit workers dead-letter refused jobs (`pubsub.audit_dead_letter_topic`).
    AuditDeadLetterTopic,
    /// Where audits record the deletions they request (`pubsub.audit_trail_topic`).
    AuditTrailTopic,
}

impl Resource {
    /// Every resource, in declaration order (the call meter's index).
    pub const ALL: [Resource; 11] = [
        Resource::HvTable,
        Resource::ChangelogTable,
        Resource::Bucket,
        Resource::JobsTopic,
        Resource::DeadLetterTopic,
        Resource::Subscription,
        Resource::DeadLetterSubscription,
        Resource::AuditTopic,
        Resource::AuditSubscription,
        Resource::AuditDeadLetterTopic,
        Resource::AuditTrailTopic,
    ];

    /// The resource's name in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Resource::HvTable => "hv_table",
            Resource::ChangelogTable => "changelog_table",
            Resource::Bucket => "bucket",
            Resource::JobsTopic => "jobs_topic",
            Resource::DeadLetterTopic => "dead_letter_topic",
            Resource::Subscription => "subscription",
            Resource::DeadLetterSubscription => "dead_letter_subscription",
            Resource::AuditTopic => "audit_topic",
            Resource::AuditSubscription => "audit_subscription",
            Resource::AuditDeadLetterTopic => "audit_dead_letter_topic",
            Resource::AuditTrailTopic => "audit_trail_topic",
        }
    }
}

/// One RPC or API method, named as its service names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// Bigtable ReadRows (also single-row reads).
    BigtableReadRows,
    /// Bigtable CheckAndMutateRow.
    BigtableCheckAndMutateRow,
    /// Bigtable MutateRow.
    BigtableMutateRow,
    /// Bigtable MutateRows.
    BigtableMutateRows,
    /// Cloud Storage objects.insert (uploads).
    GcsObjectsInsert,
    /// Cloud Storage objects.get (metadata and media).
    GcsObjectsGet,
    /// Cloud Storage objects.delete.
    GcsObjectsDelete,
    /// Cloud Storage objects.list.
    GcsObjectsList,
    /// Asks which of a set of permissions the caller holds on the bucket. It needs no
    /// permission, which is why readiness checks use it (fake-gcs-server has no IAM API;
    /// there the check reads the bucket instead, and counts as this call).
    GcsBucketsTestIamPermissions,
    /// Pub/Sub Publish.
    PubsubPublish,
    /// Pub/Sub GetTopic (readiness checks).
    PubsubGetTopic,
    /// Pub/Sub GetSubscription (readiness checks).
    PubsubGetSubscription,
    /// Pub/Sub StreamingPull.
    PubsubStreamingPull,
    /// Unary pull (`tiersweep dlq`'s snapshots).
    PubsubPull,
    /// Acks, sent by the client library in batches; counted per message settled.
    PubsubAcknowledge,
    /// Nacks (deadline 0), counted per message settled. Lease extensions are sent by the
    /// client library underneath and need the same permission.
    PubsubModifyAckDeadline,
}

impl Method {
    /// Every method, in declaration order (the call meter's index).
    pub const ALL: [Method; 16] = [
        Method::BigtableReadRows,
        Method::BigtableCheckAndMutateRow,
        Method::BigtableMutateRow,
        Method::BigtableMutateRows,
        Method::GcsObjectsInsert,
        Method::GcsObjectsGet,
        Method::GcsObjectsDelete,
        Method::GcsObjectsList,
        Method::GcsBucketsTestIamPermissions,
        Method::PubsubPublish,
        Method::PubsubGetTopic,
        Method::PubsubGetSubscription,
        Method::PubsubStreamingPull,
        Method::PubsubPull,
        Method::PubsubAcknowledge,
        Method::PubsubModifyAckDeadline,
    ];

    /// The method's name in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Method::BigtableReadRows => "bigtable.ReadRows",
            Method::BigtableCheckAndMutateRow => "bigtable.CheckAndMutateRow",
            Method::BigtableMutateRow => "bigtable.MutateRow",
            Method::BigtableMutateRows => "bigtable.MutateRows",
            Method::GcsObjectsInsert => "storage.objects.insert",
            Method::GcsObjectsGet => "storage.objects.get",
            Method::GcsObjectsDelete => "storage.objects.delete",
            Method::GcsObjectsList => "storage.objects.list",
            Method::GcsBucketsTestIamPermissions => "storage.buckets.testIamPermissions",
            Method::PubsubPublish => "pubsub.Publish",
            Method::PubsubGetTopic => "pubsub.GetTopic",
            Method::PubsubGetSubscription => "pubsub.GetSubscription",
            Method::PubsubStreamingPull => "pubsub.StreamingPull",
            Method::PubsubPull => "pubsub.Pull",
            Method::PubsubAcknowledge => "pubsub.Acknowledge",
            Method::PubsubModifyAckDeadline => "pubsub.ModifyAckDeadline",
        }
    }

    /// The IAM permissions the method needs on its resource. Sources: Bigtable's "Access
    /// control" page (permissions per data API method; CheckAndMutateRow is listed with
    /// both, since its predicate reads the row), Cloud Storage's "IAM permissions for JSON
    /// methods", Pub/Sub's "Access control" (permissions per method).
    #[cfg(any(test, feature = "testing"))]
    pub fn permissions(self) -> &'static [&'static str] {
        match self {
            Method::BigtableReadRows => &["bigtable.tables.readRows"],
            Method::BigtableCheckAndMutateRow => {
                &["bigtable.tables.mutateRows", "bigtable.tables.readRows"]
            }
            Method::BigtableMutateRow | Method::BigtableMutateRows => {
                &["bigtable.tables.mutateRows"]
            }
            Method::GcsObjectsInsert => &["storage.objects.create"],
            Method::GcsObjectsGet => &["storage.objects.get"],
            Method::GcsObjectsDelete => &["storage.objects.delete"],
            Method::GcsObjectsList => &["storage.objects.list"],
            Method::GcsBucketsTestIamPermissions => &[],
            Method::PubsubPublish => &["pubsub.topics.publish"],
            Method::PubsubGetTopic => &["pubsub.topics.get"],
            Method::PubsubGetSubscription => &["pubsub.subscriptions.get"],
            Method::PubsubStreamingPull
            | Method::PubsubPull
            | Method::PubsubAcknowledge
            | Method::PubsubModifyAckDeadline => &["pubsub.subscriptions.consume"],
        }
    }
}

/// One method called on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Call {
    /// What was called.
    pub method: Method,
    /// On what.
    pub resource: Resource,
}

/// The permissions of Google's predefined roles that `infra/terraform` grants, as far as
/// tiersweep's calls can need them (each role holds more; what matters here is whether a
/// needed permission is among them). Source: the IAM "predefined roles" reference.
#[cfg(any(test, feature = "testing"))]
pub const PREDEFINED_ROLES: &[(&str, &[&str])] = &[
    (
        "roles/bigtable.user",
        &[
            "bigtable.tables.readRows",
            "bigtable.tables.mutateRows",
            "bigtable.tables.sampleRowKeys",
        ],
    ),
    (
        "roles/bigtable.reader",
        &["bigtable.tables.readRows", "bigtable.tables.sampleRowKeys"],
    ),
    ("roles/pubsub.publisher", &["pubsub.topics.publish"]),
    (
        "roles/pubsub.subscriber",
        &[
            "pubsub.subscriptions.consume",
            "pubsub.topics.attachSubscription",
        ],
    ),
    (
        "roles/pubsub.viewer",
        &[
            "pubsub.topics.get",
            "pubsub.subscriptions.get",
            "pubsub.topics.list",
            "pubsub.subscriptions.list",
        ],
    ),
];

/// The process roles `infra/terraform` gives a service account each. `tiersweep scan` runs
/// as the scanner, `tiersweep clean` as the cleaner, and `status`, `inspect` and
/// `recover --dry-run` and `dlq` as the operator (the stores read only), `audit` and `reset`
/// as the auditor (the one role that lists the bucket; it deletes nothing itself, it
/// records recovery changes, and rewrites a failing row's claim count).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `tiersweep scan`.
    Scanner,
    /// `tiersweep clean`.
    Cleaner,
    /// `status`, `inspect`, `recover --dry-run`, `dlq`.
    Operator,
    /// `audit` (one-process, `--fan-out`, `--worker`) and `reset`.
    Auditor,
}

#[cfg(any(test, feature = "testing"))]
impl Role {
    /// The Terraform `google_service_account` resource name of the role.
    pub fn service_account(self) -> &'static str {
        match self {
            Role::Scanner => "scanner",
            Role::Cleaner => "cleaner",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }
}

const N: usize = Method::ALL.len() * Resource::ALL.len();

/// Calls made by this process, by method and resource.
static CALLS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

fn index(call: Call) -> usize {
    // Both enums are fieldless with implicit discriminants in `ALL` order.
    call.method as usize * Resource::ALL.len() + call.resource as usize
}

/// Counts one call. Backends call this where they send a request, whatever its outcome.
pub(crate) fn record(method: Method, resource: Resource) {
    CALLS[index(Call { method, resource })].fetch_add(1, Ordering::Relaxed);
}

/// Every call this process has made so far, with its count, in a stable order.
pub fn calls_made() -> Vec<(Call, u64)> {
    let mut out = Vec::new();
    for method in Method::ALL {
        for resource in Resource::ALL {
            let call = Call { method, resource };
            let n = CALLS[index(call)].load(Ordering::Relaxed);
            if n > 0 {
                out.push((call, n));
            }
        }
    }
    out
}

/// `calls_made` as one line of `method@resource=count` pairs, for the exit log.
pub fn calls_summary() -> String {
    calls_made()
        .iter()
        .map(|(c, n)| format!("{}@{}={n}", c.method.name(), c.resource.name()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_has_its_own_counter() {
        let mut seen = std::collections::BTreeSet::new();
        for method in Method::ALL {
            for resource in Resource::ALL {
                assert!(seen.insert(index(Call { method, resource })));
            }
        }
        assert_eq!(seen.len(), N);
        assert_eq!(seen.last(), Some(&(N - 1)));
    }

    #[test]
    fn a_recorded_call_is_reported_once_with_its_count() {
        let before = calls_made()
            .into_iter()
            .find(|(c, _)| c.method == Method::PubsubGetTopic && c.resource == Resource::Bucket)
            .map_or(0, |(_, n)| n);
        record(Method::PubsubGetTopic, Resource::Bucket);
        record(Method::PubsubGetTopic, Resource::Bucket);
        let after = calls_made()
            .into_iter()
            .find(|(c, _)| c.method == Method::PubsubGetTopic && c.resource == Resource::Bucket)
            .map_or(0, |(_, n)| n);
        assert_eq!(after - before, 2);
        assert!(calls_summary().contains("pubsub.GetTopic@bucket="));
    }
}
