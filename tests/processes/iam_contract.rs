//! What `infra/terraform/iam.tf` grants each role, read from the file, and the check of a
//! role's calls against it (the contract in `tiersweep::iam`).
//!
//! The reader knows the subset of HCL that iam.tf uses (resource blocks with one-line
//! attributes, `for_each = toset([...])`, references to the tables, topics, subscription,
//! bucket, service accounts and custom roles) and fails on a grant it cannot resolve, so a
//! new kind of grant cannot slip past the check unread.

use std::collections::{BTreeMap, BTreeSet};

use tiersweep::iam::{Call, PREDEFINED_ROLES, Resource, Role};

/// One role binding: `permissions` on `resource` for the service account `member`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Terraform resource (and for_each key) that makes it, for messages.
    pub name: String,
    pub member: String,
    pub role: String,
    pub resource: Resource,
    pub permissions: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Str(String),
    Ref(String),
    List(Vec<Value>),
}

/// `resource "TYPE" "NAME" { key = value … }` blocks, in file order.
fn blocks(hcl: &str) -> Vec<(String, String, BTreeMap<String, Value>)> {
    let mut out = Vec::new();
    let mut lines = hcl.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("resource ") else {
            continue;
        };
        let names: Vec<&str> = rest.split('"').collect();
        let (kind, name) = (names[1].to_owned(), names[3].to_owned());
        let mut attrs = BTreeMap::new();
        let mut depth = 1;
        for inner in lines.by_ref() {
            let inner = inner.trim();
            depth += inner.matches('{').count();
            depth -= inner.matches('}').count();
            if depth == 0 {
                break;
            }
            if depth == 1
                && let Some((k, v)) = inner.split_once('=')
                && !inner.starts_with('#')
            {
                attrs.insert(k.trim().to_owned(), value(v.trim()));
            }
        }
        out.push((kind, name, attrs));
    }
    out
}

fn value(v: &str) -> Value {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix("toset(").and_then(|s| s.strip_suffix(')')) {
        return value(inner);
    }
    if let Some(inner) = v.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return Value::List(
            inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(value)
                .collect(),
        );
    }
    match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(s) => Value::Str(s.to_owned()),
        None => Value::Ref(v.to_owned()),
    }
}

fn resource_of(reference: &str) -> Result<Resource, String> {
    Ok(match reference {
        "google_bigtable_table.hv.name" => Resource::HvTable,
        "google_bigtable_table.changelog.name" => Resource::ChangelogTable,
        "google_storage_bucket.lt.name" => Resource::Bucket,
        "google_pubsub_topic.jobs.id" => Resource::JobsTopic,
        "google_pubsub_topic.dead_letter.id" => Resource::DeadLetterTopic,
        "google_pubsub_subscription.cleaners.id" => Resource::Subscription,
        "google_pubsub_subscription.dead_letter_audit.id" => Resource::DeadLetterSubscription,
        "google_pubsub_topic.audit_jobs.id" => Resource::AuditTopic,
        "google_pubsub_subscription.audit_workers.id" => Resource::AuditSubscription,
        "google_pubsub_topic.audit_dead_letter.id" => Resource::AuditDeadLetterTopic,
        "google_pubsub_topic.audit_trail.id" => Resource::AuditTrailTopic,
        other => return Err(format!("unknown resource reference {other}")),
    })
}

/// Every member grant in `hcl` (iam.tf), resolved to permissions on tiersweep's resources.
pub fn bindings(hcl: &str) -> Result<Vec<Binding>, String> {
    let blocks = blocks(hcl);
    let custom: BTreeMap<String, BTreeSet<String>> = blocks
        .iter()
        .filter(|(kind, _, _)| kind == "google_project_iam_custom_role")
        .map(|(_, name, attrs)| {
            let perms = match attrs.get("permissions") {
                Some(Value::List(items)) => items
                    .iter()
                    .filter_map(|v| match v {
                        Value::Str(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => BTreeSet::new(),
            };
            (format!("google_project_iam_custom_role.{name}.id"), perms)
        })
        .collect();
    let mut out = Vec::new();
    for (kind, name, attrs) in &blocks {
        let target_key = match kind.as_str() {
            "google_bigtable_table_iam_member" => "table",
            "google_pubsub_topic_iam_member" => "topic",
            "google_pubsub_subscription_iam_member" => "subscription",
            "google_storage_bucket_iam_member" => "bucket",
            // Workload Identity: who may act as the accounts, not what they may do.
            "google_service_account_iam_member" => continue,
            k if k.contains("iam_member")
                || k.contains("iam_binding")
                || k.contains("iam_policy") =>
            {
                return Err(format!(
                    "{k}.{name}: a kind of grant this check does not read"
                ));
            }
            _ => continue,
        };
        let keys: Vec<Option<Value>> = match attrs.get("for_each") {
            Some(Value::List(items)) => items.iter().cloned().map(Some).collect(),
            Some(other) => return Err(format!("{kind}.{name}: unreadable for_each {other:?}")),
            None => vec![None],
        };
        for key in keys {
            let get = |attr: &str| -> Result<Value, String> {
                match (attrs.get(attr), &key) {
                    (Some(Value::Ref(r)), Some(k)) if r == "each.value" => Ok(k.clone()),
                    (Some(v), _) => Ok(v.clone()),
                    (None, _) => Err(format!("{kind}.{name}: no {attr}")),
                }
            };
            let member = match get("member")? {
                Value::Ref(r) => r
                    .strip_prefix("google_service_account.")
                    .and_then(|r| r.strip_suffix(".member"))
                    .map(str::to_owned)
                    .ok_or(format!(
                        "{kind}.{name}: member {r} is not a service account"
                    ))?,
                other => return Err(format!("{kind}.{name}: member {other:?}")),
            };
            let (role, permissions) = match get("role")? {
                Value::Str(role) => {
                    let perms = PREDEFINED_ROLES
                        .iter()
                        .find(|(r, _)| *r == role)
                        .map(|(_, p)| p.iter().map(|s| (*s).to_owned()).collect())
                        .ok_or(format!(
                            "{kind}.{name}: {role} is not in tiersweep::iam::PREDEFINED_ROLES"
                        ))?;
                    (role, perms)
                }
                Value::Ref(r) => {
                    let perms = custom
                        .get(&r)
                        .cloned()
                        .ok_or(format!("{kind}.{name}: unknown custom role {r}"))?;
                    (r, perms)
                }
                other => return Err(format!("{kind}.{name}: role {other:?}")),
            };
            let resource = match get(target_key)? {
                Value::Ref(r) => resource_of(&r)?,
                other => return Err(format!("{kind}.{name}: {target_key} {other:?}")),
            };
            let suffix = match &key {
                Some(Value::Str(s) | Value::Ref(s)) => format!("[{s}]"),
                _ => String::new(),
            };
            out.push(Binding {
                name: format!("{kind}.{name}{suffix}"),
                member,
                role,
                resource,
                permissions,
            });
        }
    }
    Ok(out)
}

/// What is wrong with `role`'s grants for the calls it made: a needed permission that no
/// binding grants, or a binding that no call needs. Empty when the two match.
pub fn problems(role: Role, calls: &BTreeSet<Call>, bindings: &[Binding]) -> Vec<String> {
    let mine: Vec<&Binding> = bindings
        .iter()
        .filter(|b| b.member == role.service_account())
        .collect();
    let mut out = Vec::new();
    let mut used = BTreeSet::new();
    for call in calls {
        for perm in call.method.permissions() {
            let granting: Vec<&&Binding> = mine
                .iter()
                .filter(|b| b.resource == call.resource && b.permissions.contains(*perm))
                .collect();
            if granting.is_empty() {
                out.push(format!(
                    "{role:?} calls {} on {}, which needs {perm}: infra/terraform/iam.tf does not grant it",
                    call.method.name(),
                    call.resource.name()
                ));
            }
            used.extend(granting.iter().map(|b| b.name.clone()));
        }
    }
    for b in mine {
        if !used.contains(&b.name) {
            out.push(format!(
                "{} grants {} on {} to the {role:?}, and no call it made needs it",
                b.name,
                b.role,
                b.resource.name()
            ));
        }
    }
    out
}

/// The calls a `tiersweep` process reported in its exit log (JSON lines on stderr, with
/// `RUST_LOG` letting the debug event through).
///
/// Every line must be one Cloud-Logging-shaped JSON object (`--log-format json`): a line
/// that is not fails here, so a real worker's JSON logs are checked wherever this runs.
pub fn calls_from_log(stderr: &str) -> Option<BTreeSet<Call>> {
    for l in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
        let severity = v["severity"].as_str().unwrap_or_default();
        assert!(
            ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&severity),
            "no Cloud Logging severity: {l}"
        );
        assert!(
            v["message"].is_string() && v["timestamp"].is_string(),
            "{l}"
        );
    }
    let line = stderr.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        v["fields"]["calls"].as_str().map(str::to_owned)
    })?;
    let mut out = BTreeSet::new();
    for item in line.split_whitespace() {
        let (call, _count) = item.split_once('=')?;
        let (method, resource) = call.split_once('@')?;
        let method = tiersweep::iam::Method::ALL
            .into_iter()
            .find(|m| m.name() == method)?;
        let resource = Resource::ALL.into_iter().find(|r| r.name() == resource)?;
        out.insert(Call { method, resource });
    }
    Some(out)
}
