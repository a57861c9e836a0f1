//! Changelog conformance, including the seed's checks: a fresh entry is not returned by a
//! scan, a stale entry is claimed once and only once, removing a missing entry is fine.

use std::time::Duration;

use crate::changelog::{
    Changelog, ChangelogEntry, Claim, Extension, Heartbeat, MintedWindow, Removal, ScanRequest,
    ScannedRow,
};
use crate::model::{
    ChangeId, ChangeRecord, ObjectPath, OwnerToken, Revision, ShardRange, ShardSet, Timestamp,
};

const MS: Duration = Duration::from_millis(1);
const LEASE: Duration = Duration::from_secs(600);

fn record() -> ChangeRecord {
    let p = ObjectPath::new(format!("conformance/{}", uuid::Uuid::now_v7())).unwrap();
    let mut r = ChangeRecord::new(
        p.clone(),
        Some(Revision::mint(&p)),
        Some(Revision::mint(&p)),
        OwnerToken::mint("writer"),
    );
    r.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    r
}

async fn scan_ids(cl: &dyn Changelog, cutoff: Timestamp, now: Timestamp) -> Vec<ChangeId> {
    let mut ids = Vec::new();
    let mut start_after = None;
    loop {
        let req = ScanRequest {
            shards: ShardSet::ALL,
            cutoff,
            stamped_from: None,
            now,
            start_after,
            limit: 100,
            minted: None,
            report_waiting: false,
        };
        let page = cl.scan_stale(&req).await.unwrap();
        for row in page.rows {
            match row {
                ScannedRow::Entry(e) => ids.push(e.id),
                ScannedRow::Malformed { key, reason } => {
                    panic!("unexpected malformed row {key}: {reason}")
                }
                ScannedRow::Waiting { id, .. } => panic!("waiting row {id} was not asked for"),
            }
        }
        start_after = page.resume_after;
        if start_after.is_none() {
            return ids;
        }
    }
}

/// Records `rec` and returns the stamp the changelog gave it (its own time, which the
/// caller cannot know in advance: Bigtable's server assigns it).
async fn recorded(cl: &dyn Changelog, id: &ChangeId, rec: &ChangeRecord) -> Timestamp {
    cl.record(id, rec).await.unwrap();
    entry(cl, id).await.stamp
}

async fn entry(cl: &dyn Changelog, id: &ChangeId) -> ChangelogEntry {
    cl.get(id).await.unwrap().expect("entry exists")
}

pub async fn recorded_entry_reads_back(cl: &dyn Changelog) {
    let (id, rec) = (ChangeId::mint(), record());
    let before = cl.now().await.unwrap();
    cl.record(&id, &rec).await.unwrap();
    let e = entry(cl, &id).await;
    assert_eq!(e.id, id);
    assert_eq!(e.record, rec);
    let after = cl.now().await.unwrap();
    assert!(
        before <= e.stamp && e.stamp <= after,
        "stamped in the changelog's own time: {before:?} <= {:?} <= {after:?}",
        e.stamp
    );
    assert_eq!(cl.get(&ChangeId::mint()).await.unwrap(), None);
}

pub async fn fresh_entry_is_not_stale(cl: &dyn Changelog) {
    let (id, rec) = (ChangeId::mint(), record());
    let stamp = recorded(cl, &id, &rec).await;
    assert!(
        !scan_ids(cl, stamp, stamp).await.contains(&id),
        "stamped at the cutoff is not stale"
    );
    assert!(
        scan_ids(cl, stamp.saturating_add(MS), stamp)
            .await
            .contains(&id)
    );
}

pub async fn stale_entry_is_claimed_once(cl: &dyn Changelog) {
    let (id, rec) = (ChangeId::mint(), record());
    let stamp = recorded(cl, &id, &rec).await;
    let cutoff = stamp.saturating_add(MS);
    let claimers: Vec<OwnerToken> = (0..4).map(|_| OwnerToken::mint("recovery")).collect();
    let lease_until = stamp.saturating_add(LEASE);
    let seen = entry(cl, &id).await;
    let outcomes = futures::future::join_all(
        claimers
            .iter()
            .map(|c| cl.claim(&seen, cutoff, c, lease_until)),
    )
    .await;
    let won: Vec<ChangelogEntry> = outcomes
        .into_iter()
        .filter_map(|o| match o.unwrap() {
            Claim::Won(e) => Some(e),
            Claim::Lost => None,
        })
        .collect();
    assert_eq!(won.len(), 1, "exactly one of four concurrent claims wins");
    let stored = entry(cl, &id).await;
    assert!(claimers.contains(&stored.record.owner));
    assert_eq!(stored.record.claims, 1);
    assert_eq!(stored.stamp, lease_until);
    assert_eq!(stored.record.object, rec.object);
    assert_eq!(won[0].record.owner, stored.record.owner);
    // Claimed rows are stamped into the future: no longer stale at the old cutoff.
    assert!(!scan_ids(cl, cutoff, cutoff).await.contains(&id));
    let again = cl
        .claim(&stored, cutoff, &OwnerToken::mint("recovery"), lease_until)
        .await
        .unwrap();
    assert_eq!(again, Claim::Lost);
    // Once the lease has passed it can be claimed again, and the count grows.
    let later = lease_until.saturating_add(MS);
    assert!(scan_ids(cl, later, later).await.contains(&id));
    // ...but not on the strength of the first scan: the row has moved on since.
    let stale_view = cl
        .claim(
            &seen,
            later,
            &OwnerToken::mint("recovery"),
            later.saturating_add(LEASE),
        )
        .await
        .unwrap();
    assert_eq!(
        stale_view,
        Claim::Lost,
        "a claim from an outdated scan loses"
    );
    let again = cl
        .claim(
            &stored,
            later,
            &OwnerToken::mint("recovery"),
            later.saturating_add(LEASE),
        )
        .await
        .unwrap();
    assert!(matches!(again, Claim::Won(e) if e.record.claims == 2));
}

pub async fn claim_fences_the_writer(cl: &dyn Changelog) {
    let (id, rec) = (ChangeId::mint(), record());
    let stamp = recorded(cl, &id, &rec).await;
    let claimer = OwnerToken::mint("recovery");
    let won = cl
        .claim(
            &entry(cl, &id).await,
            stamp.saturating_add(MS),
            &claimer,
            stamp.saturating_add(LEASE),
        )
        .await
        .unwrap();
    assert!(matches!(won, Claim::Won(_)));
    assert_eq!(
        cl.heartbeat(&id, &rec.owner).await.unwrap(),
        Heartbeat::Refused
    );
    assert_eq!(cl.remove(&id, &rec.owner).await.unwrap(), Removal::NotOwned);
    let err = cl
        .record(&id, &rec)
        .await
        .expect_err("a record attempt landing after the claim is refused");
    assert_eq!(err.kind, crate::error::ErrorKind::Permanent, "{err}");
    let after = entry(cl, &id).await;
    assert_eq!(
        after.record.owner, claimer,
        "the writer cannot take the row back"
    );
    assert_eq!(after.record.claims, 1, "the claim's row is left as it was");
}

/// A record attempt that lands after an earlier one of the same call (whose response was
/// lost) succeeds and writes nothing: the row keeps the first attempt's stamp and any
/// deferral since.
pub async fn a_repeated_record_confirms_without_writing(cl: &dyn Changelog) {
    let (id, rec) = (ChangeId::mint(), record());
    let stamp = recorded(cl, &id, &rec).await;
    let mut deferred = rec.clone();
    deferred.due_at = Some(stamp.saturating_add(LEASE));
    assert_eq!(
        cl.defer(&id, &deferred).await.unwrap(),
        crate::changelog::Deferral::Deferred
    );
    cl.record(&id, &rec)
        .await
        .expect("the same record again is the caller's own row");
    assert_eq!(
        entry(cl, &id).await.record,
        deferred,
        "the repeated attempt wrote nothing"
    );
}

pub async fn heartbeat_refreshes_only_for_the_owner(cl: &dyn Changelog) {
    let (id, rec) = (ChangeId::mint(), record());
    let stamp = recorded(cl, &id, &rec).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        cl.heartbeat(&id, &rec.owner).await.unwrap(),
        Heartbeat::Refreshed
    );
    let refreshed = entry(cl, &id).await;
    assert!(
        refreshed.stamp >= stamp,
        "a heartbeat never moves the stamp back"
    );
    assert_eq!(
        refreshed.record, rec,
        "a heartbeat leaves the record as it was"
    );
    assert_eq!(
        cl.heartbeat(&id, &OwnerToken::mint("writer"))
            .await
            .unwrap(),
        Heartbeat::Refused
    );
    assert_eq!(
        cl.heartbeat(&ChangeId::mint(), &rec.owner).await.unwrap(),
        Heartbeat::Refused,
        "a heartbeat does not resurrect a removed row"
    );
    assert_eq!(
        cl.get(&id).await.unwrap().map(|e| e.record.owner),
        Some(rec.owner)
    );
}

pub async fn remove_is_conditional_and_missing_is_fine(cl: &dyn Changelog) {
    let (id, rec) = (ChangeId::mint(), record());
    cl.record(&id, &rec).await.unwrap();
    assert_eq!(
        cl.remove(&id, &OwnerToken::mint("x")).await.unwrap(),
        Removal::NotOwned
    );
    assert!(cl.get(&id).await.unwrap().is_some());
    assert_eq!(cl.remove(&id, &rec.owner).await.unwrap(), Removal::Removed);
    assert_eq!(cl.get(&id).await.unwrap(), None);
    assert_eq!(cl.remove(&id, &rec.owner).await.unwrap(), Removal::NotOwned);
    assert_eq!(
        cl.remove(&ChangeId::mint(), &rec.owner).await.unwrap(),
        Removal::NotOwned
    );
}

pub async fn get_many_reads_each_row_in_one_call(cl: &dyn Changelog) {
    let (a, rec_a) = (ChangeId::mint(), record());
    let (b, rec_b) = (ChangeId::mint(), record());
    cl.record(&a, &rec_a).await.unwrap();
    cl.record(&b, &rec_b).await.unwrap();
    let missing = ChangeId::mint();
    let asked = [a.clone(), missing, b.clone(), a.clone()];
    let owners: Vec<Option<OwnerToken>> = cl
        .get_many(&asked)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.map(|e| e.record.owner))
        .collect();
    assert_eq!(
        owners,
        vec![
            Some(rec_a.owner.clone()),
            None,
            Some(rec_b.owner.clone()),
            Some(rec_a.owner.clone())
        ],
        "a row; no such row; another row; the first again (order kept, rows asked twice)"
    );
    let read = cl.get_many(&asked[..1]).await.unwrap();
    assert_eq!(
        read,
        vec![Some(entry(cl, &a).await)],
        "the same entry get reads"
    );
    assert_eq!(cl.remove(&a, &rec_a.owner).await.unwrap(), Removal::Removed);
    assert_eq!(cl.get_many(&asked[..1]).await.unwrap(), vec![None]);
    assert!(cl.get_many(&[]).await.unwrap().is_empty());
}

/// Recovery's batched removal: every row asked goes, with no owner to match, rows already
/// gone are fine, rows not asked stay.
pub async fn remove_many_removes_whoever_owns_the_rows(cl: &dyn Changelog) {
    let (a, rec_a) = (ChangeId::mint(), record());
    let (b, rec_b) = (ChangeId::mint(), record());
    let (kept, rec_kept) = (ChangeId::mint(), record());
    for (id, rec) in [(&a, &rec_a), (&b, &rec_b), (&kept, &rec_kept)] {
        cl.record(id, rec).await.unwrap();
    }
    cl.remove_many(&[a.clone(), ChangeId::mint(), b.clone()])
        .await
        .unwrap();
    assert_eq!(cl.get(&a).await.unwrap(), None);
    assert_eq!(cl.get(&b).await.unwrap(), None);
    assert!(
        cl.get(&kept).await.unwrap().is_some(),
        "a row not asked stays"
    );
    cl.remove_many(&[a]).await.unwrap();
    cl.remove_many(&[]).await.unwrap();
}

pub async fn extend_claim_only_moves_the_owners_lease_later(cl: &dyn Changelog) {
    let (id, rec) = (ChangeId::mint(), record());
    let stamp = recorded(cl, &id, &rec).await;
    let claimer = OwnerToken::recovery_claim();
    let lease_until = stamp.saturating_add(LEASE);
    let seen = entry(cl, &id).await;
    let cutoff = stamp.saturating_add(MS);
    assert!(matches!(
        cl.claim(&seen, cutoff, &claimer, lease_until)
            .await
            .unwrap(),
        Claim::Won(_)
    ));
    let claimed = entry(cl, &id).await;
    let later = lease_until.saturating_add(LEASE);
    assert_eq!(
        cl.extend_claim(&id, &OwnerToken::recovery_claim(), later)
            .await
            .unwrap(),
        Extension::Refused,
        "another claim cannot extend this one"
    );
    assert_eq!(
        cl.extend_claim(&id, &claimer, stamp).await.unwrap(),
        Extension::Refused,
        "a lease is never shortened"
    );
    assert_eq!(entry(cl, &id).await, claimed);
    assert_eq!(
        cl.extend_claim(&id, &claimer, later).await.unwrap(),
        Extension::Extended
    );
    let extended = entry(cl, &id).await;
    assert_eq!(extended.stamp, later);
    assert_eq!(
        extended.record, claimed.record,
        "an extension leaves the record as it was"
    );
    assert!(
        !scan_ids(
            cl,
            lease_until.saturating_add(MS),
            lease_until.saturating_add(MS)
        )
        .await
        .contains(&id),
        "an extended claim is not stale when its first lease ends"
    );
    assert_eq!(cl.remove(&id, &claimer).await.unwrap(), Removal::Removed);
    assert_eq!(
        cl.extend_claim(&id, &claimer, later.saturating_add(LEASE))
            .await
            .unwrap(),
        Extension::Refused,
        "an extension does not resurrect a removed row"
    );
    assert_eq!(cl.get(&id).await.unwrap(), None);
}

pub async fn a_scan_from_a_stamp_reads_only_rows_stamped_since(cl: &dyn Changelog) {
    let (a, b) = (ChangeId::mint(), ChangeId::mint());
    let stamp_a = recorded(cl, &a, &record()).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let rec_b = record();
    let mut stamp_b = recorded(cl, &b, &rec_b).await;
    while stamp_b <= stamp_a {
        tokio::time::sleep(Duration::from_millis(5)).await;
        cl.heartbeat(&b, &rec_b.owner).await.unwrap();
        stamp_b = entry(cl, &b).await.stamp;
    }
    let cutoff = stamp_b.saturating_add(MS);
    let from = |stamped_from: Timestamp| async move {
        let req = ScanRequest {
            shards: ShardSet::ALL,
            cutoff,
            stamped_from: Some(stamped_from),
            now: cutoff,
            start_after: None,
            limit: 1000,
            minted: None,
            report_waiting: false,
        };
        let page = cl.scan_stale(&req).await.unwrap();
        page.rows
            .into_iter()
            .filter_map(|r| match r {
                ScannedRow::Entry(e) => Some(e.id),
                ScannedRow::Malformed { .. } | ScannedRow::Waiting { .. } => None,
            })
            .collect::<Vec<_>>()
    };
    let since_b = from(stamp_b).await;
    assert!(since_b.contains(&b), "a row stamped at the bound is read");
    assert!(
        !since_b.contains(&a),
        "a row stamped before the bound is not"
    );
    let since_a = from(stamp_a).await;
    assert!(since_a.contains(&a) && since_a.contains(&b));
    assert!(
        from(cutoff).await.is_empty(),
        "nothing is stamped at or after the cutoff and stale"
    );
}

/// Every row a scan with `window` returns, over pages of `limit`.
async fn scan_all(
    cl: &dyn Changelog,
    cutoff: Timestamp,
    window: Option<MintedWindow>,
    report_waiting: bool,
    limit: usize,
) -> Vec<ScannedRow> {
    let mut rows = Vec::new();
    let mut start_after = None;
    loop {
        let req = ScanRequest {
            shards: ShardSet::ALL,
            cutoff,
            stamped_from: None,
            now: cutoff,
            start_after,
            limit,
            minted: window,
            report_waiting,
        };
        let page = cl.scan_stale(&req).await.unwrap();
        assert!(page.rows.len() <= limit);
        rows.extend(page.rows);
        start_after = page.resume_after;
        if start_after.is_none() {
            return rows;
        }
    }
}

fn entry_ids(rows: &[ScannedRow], among: &[ChangeId]) -> Vec<ChangeId> {
    let mut ids: Vec<ChangeId> = rows
        .iter()
        .filter_map(|r| match r {
            ScannedRow::Entry(e) if among.contains(&e.id) => Some(e.id.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

pub async fn a_scan_by_minting_time_reads_only_ids_minted_in_the_window(cl: &dyn Changelog) {
    const HOUR: i64 = 3_600_000;
    let base = cl.now().await.unwrap();
    // Minted an hour apart, hours ago: the window selects by key, whatever the stamps.
    let ids: Vec<ChangeId> = (0..3)
        .map(|i| ChangeId::mint_at(Timestamp(base.0 - (3 - i) * HOUR)))
        .collect();
    let mut last = base;
    for id in &ids {
        last = recorded(cl, id, &record()).await;
    }
    let cutoff = last.saturating_add(MS);
    let minted = |i: usize| ids[i].minted_at();
    let sorted = |v: Vec<usize>| {
        let mut out: Vec<ChangeId> = v.into_iter().map(|i| ids[i].clone()).collect();
        out.sort();
        out
    };
    let just_after = |i: usize| minted(i).map(|t| Timestamp(t.0 + 1));
    let cases = [
        (minted(1), minted(2), None, vec![1]),
        (None, minted(1), None, vec![0]),
        (minted(1), None, None, vec![1, 2]),
        (minted(0), just_after(0), None, vec![0]),
        (minted(2), minted(2), None, vec![]),
        // An `ahead` window adds the ids minted in it, apart from the first range...
        (
            minted(0),
            minted(1),
            minted(2).zip(just_after(2)),
            vec![0, 2],
        ),
        // ...or merged with it when they touch or overlap.
        (minted(0), minted(1), minted(1).zip(minted(2)), vec![0, 1]),
        (
            minted(1),
            minted(2),
            minted(0).zip(just_after(2)),
            vec![1, 2],
        ),
    ];
    for (from, to, ahead, want) in cases {
        let window = Some(MintedWindow {
            from,
            to,
            whole: ShardSet::EMPTY,
            ahead,
        });
        let want = sorted(want);
        for limit in [1, 1000] {
            let rows = scan_all(cl, cutoff, window, false, limit).await;
            assert_eq!(
                entry_ids(&rows, &ids),
                want,
                "window {from:?}..{to:?} and {ahead:?}, pages of {limit}"
            );
        }
    }
    // A shard read whole ignores the window's lower bound, not its upper one.
    let whole: ShardSet = [ids[0].shard()].into_iter().collect();
    let window = Some(MintedWindow {
        from: minted(1),
        to: minted(2),
        whole,
        ahead: None,
    });
    for limit in [1, 1000] {
        let rows = scan_all(cl, cutoff, window, false, limit).await;
        assert_eq!(
            entry_ids(&rows, &ids),
            sorted(vec![0, 1]),
            "pages of {limit}"
        );
    }
    let everything = scan_all(cl, cutoff, None, false, 1000).await;
    assert_eq!(entry_ids(&everything, &ids), sorted(vec![0, 1, 2]));
}

pub async fn a_scan_reports_rows_not_claimable_as_waiting_when_asked(cl: &dyn Changelog) {
    let (stale, deferred, live) = (ChangeId::mint(), ChangeId::mint(), ChangeId::mint());
    let stale_stamp = recorded(cl, &stale, &record()).await;
    let mut later = record();
    later.due_at = Some(stale_stamp.saturating_add(Duration::from_secs(3600)));
    let deferred_stamp = recorded(cl, &deferred, &later).await;
    let live_record = record();
    let mut live_stamp = recorded(cl, &live, &live_record).await;
    while live_stamp <= deferred_stamp.max(stale_stamp) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        cl.heartbeat(&live, &live_record.owner).await.unwrap();
        live_stamp = entry(cl, &live).await.stamp;
    }
    let ours = [stale.clone(), deferred.clone(), live.clone()];
    let window = Some(MintedWindow {
        from: stale.minted_at(),
        to: None,
        whole: ShardSet::EMPTY,
        ahead: None,
    });
    // The cutoff falls between the first two rows' stamps and the live row's.
    let cutoff = live_stamp;
    let quiet = scan_all(cl, cutoff, window, false, 1000).await;
    assert_eq!(entry_ids(&quiet, &ours), vec![stale.clone()]);
    assert!(
        !quiet
            .iter()
            .any(|r| matches!(r, ScannedRow::Waiting { .. })),
        "waiting rows only when asked"
    );
    let told = scan_all(cl, cutoff, window, true, 1000).await;
    assert_eq!(entry_ids(&told, &ours), vec![stale.clone()]);
    let waiting = |id: &ChangeId| {
        told.iter().find_map(|r| match r {
            ScannedRow::Waiting {
                id: w,
                stamp,
                due_at,
            } if w == id => Some((*stamp, *due_at)),
            _ => None,
        })
    };
    assert_eq!(
        waiting(&deferred),
        Some((entry(cl, &deferred).await.stamp, later.due_at)),
        "a deferred row comes with its cleanup time"
    );
    assert_eq!(
        waiting(&live),
        Some((entry(cl, &live).await.stamp, None)),
        "a live row comes with its stamp"
    );
    assert_eq!(waiting(&stale), None);
}

pub async fn cleanup_after_is_honoured(cl: &dyn Changelog) {
    let (id, mut rec) = (ChangeId::mint(), record());
    let probe = recorded(cl, &ChangeId::mint(), &record()).await;
    rec.due_at = Some(probe.saturating_add(Duration::from_secs(3600)));
    let stamp = recorded(cl, &id, &rec).await;
    let cutoff = stamp.saturating_add(MS);
    assert!(!scan_ids(cl, cutoff, cutoff).await.contains(&id));
    let after = rec.due_at.unwrap();
    assert!(scan_ids(cl, cutoff, after).await.contains(&id));
}

pub async fn defer_rewrites_only_for_the_owner_and_postpones_recovery(cl: &dyn Changelog) {
    let (id, rec) = (ChangeId::mint(), record());
    let stamp = recorded(cl, &id, &rec).await;
    let mut later = rec.clone();
    later.due_at = Some(stamp.saturating_add(Duration::from_secs(3600)));
    let mut stranger = later.clone();
    stranger.owner = OwnerToken::mint("stranger");
    assert_eq!(
        cl.defer(&id, &stranger).await.unwrap(),
        crate::changelog::Deferral::NotOwned
    );
    assert_eq!(
        entry(cl, &id).await.record,
        rec,
        "a stranger changes nothing"
    );
    assert_eq!(
        cl.defer(&id, &later).await.unwrap(),
        crate::changelog::Deferral::Deferred
    );
    let deferred = entry(cl, &id).await;
    assert_eq!(deferred.record, later);
    let cutoff = deferred.stamp.saturating_add(MS);
    assert!(
        !scan_ids(cl, cutoff, cutoff).await.contains(&id),
        "a deferred row is left alone until its due_at"
    );
    assert!(
        scan_ids(cl, cutoff, later.due_at.unwrap())
            .await
            .contains(&id)
    );
    assert_eq!(
        cl.defer(&ChangeId::mint(), &later).await.unwrap(),
        crate::changelog::Deferral::NotOwned,
        "a missing row is not created"
    );
}

pub async fn scan_pages_resume_and_respect_shards(cl: &dyn Changelog) {
    let mut ids = Vec::new();
    let mut last = Timestamp(0);
    for _ in 0..12 {
        let id = ChangeId::mint();
        last = last.max(recorded(cl, &id, &record()).await);
        ids.push(id);
    }
    let cutoff = last.saturating_add(MS);
    // Pages of 5 stop at the limit and resume after the last key read.
    let mut seen = Vec::new();
    let mut start_after = None;
    let mut pages = 0;
    loop {
        let req = ScanRequest {
            shards: ShardSet::ALL,
            cutoff,
            stamped_from: None,
            now: cutoff,
            start_after,
            limit: 5,
            minted: None,
            report_waiting: false,
        };
        let page = cl.scan_stale(&req).await.unwrap();
        assert!(page.rows.len() <= 5);
        pages += 1;
        for row in page.rows {
            if let ScannedRow::Entry(e) = row {
                seen.push(e.id);
            }
        }
        start_after = page.resume_after;
        if start_after.is_none() {
            break;
        }
    }
    assert!(pages >= 3, "12 rows in pages of 5 take at least 3 pages");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "scans return rows in key order");
    for id in &ids {
        assert!(seen.contains(id), "{id} missing from the paged scan");
    }
    // Each half of a 2-scanner split sees exactly its own shards, and so does a scattered
    // set (what a scanner holds under leases): every other shard of the ids', and their
    // complement.
    let scattered: ShardSet = ids.iter().step_by(2).map(|id| id.shard()).collect();
    let sets = [
        ShardRange::for_member(0, 2).unwrap().into(),
        ShardRange::for_member(1, 2).unwrap().into(),
        scattered,
        ShardSet::ALL.difference(&scattered),
    ];
    for shards in sets {
        let req = ScanRequest {
            shards,
            cutoff,
            stamped_from: None,
            now: cutoff,
            start_after: None,
            limit: 1000,
            minted: None,
            report_waiting: false,
        };
        let page = cl.scan_stale(&req).await.unwrap();
        for row in &page.rows {
            if let ScannedRow::Entry(e) = row {
                assert!(shards.contains(e.id.shard()), "{} outside {shards:?}", e.id);
            }
        }
        let mine = ids.iter().filter(|id| shards.contains(id.shard())).count();
        let found = page
            .rows
            .iter()
            .filter(|r| matches!(r, ScannedRow::Entry(e) if ids.contains(&e.id)))
            .count();
        assert_eq!(found, mine);
    }
}

/// A claim whose response was lost is retried; the retry must win, not count as lost.
pub async fn claim_retry_by_its_claimer_wins(cl: &dyn Changelog) {
    let (id, rec) = (ChangeId::mint(), record());
    let stamp = recorded(cl, &id, &rec).await;
    let seen = entry(cl, &id).await;
    let (cutoff, lease_until) = (stamp.saturating_add(MS), stamp.saturating_add(LEASE));
    let claimer = OwnerToken::mint("recovery");
    let first = cl
        .claim(&seen, cutoff, &claimer, lease_until)
        .await
        .unwrap();
    let retry = cl
        .claim(&seen, cutoff, &claimer, lease_until)
        .await
        .unwrap();
    assert!(matches!(first, Claim::Won(_)));
    assert!(
        matches!(&retry, Claim::Won(e) if e.record.owner == claimer && e.record.claims == 1),
        "retry: {retry:?}"
    );
}
