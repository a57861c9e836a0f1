//! HV store conformance: the compare-and-write on versions that the protocol's safety
//! rests on, including the awkward parts (a row outlives its data; a fence refuses every
//! earlier expectation, of any writer).

use bytes::Bytes;

use crate::hv::{CasOutcome, HvRow, HvStore, HvWrite, Version};
use crate::model::{ChangeId, HvValue, ObjectMeta, ObjectPath, Revision};

fn path() -> ObjectPath {
    ObjectPath::new(format!("conformance/{}", uuid::Uuid::now_v7())).unwrap()
}

fn inline(b: &'static [u8]) -> HvWrite {
    HvWrite::inline(Bytes::from_static(b))
}

async fn row(hv: &dyn HvStore, p: &ObjectPath) -> HvRow {
    hv.read_row(p).await.unwrap()
}

pub async fn absent_reads_none(hv: &dyn HvStore) {
    let p = path();
    assert_eq!(hv.read(&p).await.unwrap(), None);
    assert_eq!(row(hv, &p).await, HvRow::default(), "no value, no version");
}

pub async fn cas_applies_on_the_version_read_and_conflicts_otherwise(hv: &dyn HvStore) {
    let p = path();
    let first = Version::mint();
    let out = hv
        .compare_and_write(&p, None, &inline(b"small"), &first)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    let now = row(hv, &p).await;
    assert_eq!(
        now.value,
        Some(HvValue::Inline(Bytes::from_static(b"small")))
    );
    assert_eq!(
        now.version.as_ref(),
        Some(&first),
        "the write left its version"
    );

    // Expecting "never written", or another version, is refused and writes nothing.
    let rev = Revision::mint(&p);
    for stale in [None, Some(Version::mint())] {
        let out = hv
            .compare_and_write(
                &p,
                stale.as_ref(),
                &HvWrite::tombstone(rev.clone()),
                &Version::mint(),
            )
            .await
            .unwrap();
        assert_eq!(out, CasOutcome::Conflict, "expected {stale:?}");
    }
    assert_eq!(row(hv, &p).await, now);

    let second = Version::of_change(&ChangeId::mint());
    let out = hv
        .compare_and_write(&p, Some(&first), &HvWrite::tombstone(rev.clone()), &second)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    let now = row(hv, &p).await;
    assert_eq!(now.value, Some(HvValue::Tombstone(rev)));
    assert_eq!(now.version, Some(second.clone()));
    // A tombstone replaced by an inline value leaves no trace of it.
    let third = Version::mint();
    hv.compare_and_write(&p, Some(&second), &inline(b"again"), &third)
        .await
        .unwrap();
    assert_eq!(
        hv.read(&p).await.unwrap(),
        Some(HvValue::Inline(Bytes::from_static(b"again")))
    );
}

pub async fn a_retry_recognises_its_own_landing(hv: &dyn HvStore) {
    let p = path();
    let rev = Revision::mint(&p);
    let new_version = Version::of_change(&ChangeId::mint());
    let write = HvWrite::tombstone(rev.clone());
    for attempt in 0..2 {
        let out = hv
            .compare_and_write(&p, None, &write, &new_version)
            .await
            .unwrap();
        assert_eq!(
            out,
            CasOutcome::Applied,
            "attempt {attempt}: the row holds this write's version"
        );
    }
    // Another writer with the same stale expectation is told it conflicts.
    let out = hv
        .compare_and_write(&p, None, &inline(b"other"), &Version::mint())
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);
    assert_eq!(hv.read(&p).await.unwrap(), Some(HvValue::Tombstone(rev)));
}

pub async fn a_fence_refuses_every_earlier_expectation(hv: &dyn HvStore) {
    let p = path();
    let old = Revision::mint(&p);
    let v = Version::mint();
    hv.compare_and_write(&p, None, &HvWrite::tombstone(old.clone()), &v)
        .await
        .unwrap();
    let other = Revision::mint(&p);
    assert!(
        !hv.fence(&p, &other).await.unwrap(),
        "the row's tombstone names another revision"
    );
    let between = row(hv, &p).await;
    assert_ne!(
        between.version,
        Some(v.clone()),
        "a fence that did not match is a new version"
    );
    assert!(
        hv.fence(&p, &old).await.unwrap(),
        "the row's tombstone names the revision asked about"
    );
    let after = row(hv, &p).await;
    assert_ne!(after.version, between.version, "so is one that did");
    assert_ne!(after.version, Some(v.clone()), "a fence is a new version");
    let late = HvWrite::tombstone(Revision::mint(&p));
    let new_version = Version::of_change(&ChangeId::mint());
    let out = hv
        .compare_and_write(&p, Some(&v), &late, &new_version)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict, "written before the fence");
    assert_eq!(
        hv.read(&p).await.unwrap(),
        Some(HvValue::Tombstone(old.clone()))
    );
    // Fencing again is fine and changes no data.
    assert!(hv.fence(&p, &old).await.unwrap());
    assert_eq!(row(hv, &p).await.value, after.value);

    // A writer that reads after the fence writes as usual.
    let fresh = row(hv, &p).await;
    let new = Revision::mint(&p);
    let out = hv
        .compare_and_write(
            &p,
            fresh.version.as_ref(),
            &HvWrite::tombstone(new.clone()),
            &Version::mint(),
        )
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    assert_eq!(hv.read(&p).await.unwrap(), Some(HvValue::Tombstone(new)));
}

/// The fence's answer is about the tombstone cell and the whole revision name: an inline
/// value holding the name, metadata naming it, or an object deleted since, all answer
/// `false` (recovery would otherwise keep a blob nobody
/// references, or, had the answer been the other way round, delete one somebody does).
pub async fn a_fence_answers_for_the_tombstone_exactly(hv: &dyn HvStore) {
    let p = path();
    let rev = Revision::mint(&p);
    let name = Bytes::from(rev.as_str().to_owned());
    hv.compare_and_write(&p, None, &HvWrite::inline(name), &Version::mint())
        .await
        .unwrap();
    assert!(
        !hv.fence(&p, &rev).await.unwrap(),
        "an inline value is no tombstone"
    );

    let tagged = ObjectMeta::default()
        .with_user("rev", rev.as_str())
        .unwrap();
    let v = row(hv, &p).await.version;
    let other = Revision::mint(&p);
    hv.compare_and_write(
        &p,
        v.as_ref(),
        &HvWrite::Tombstone(other.clone(), tagged),
        &Version::mint(),
    )
    .await
    .unwrap();
    assert!(
        !hv.fence(&p, &rev).await.unwrap(),
        "metadata naming it is no tombstone"
    );
    assert!(hv.fence(&p, &other).await.unwrap());

    let v = row(hv, &p).await.version;
    hv.compare_and_write(&p, v.as_ref(), &HvWrite::Delete, &Version::mint())
        .await
        .unwrap();
    assert!(
        !hv.fence(&p, &other).await.unwrap(),
        "a deleted object names nothing"
    );
}

/// A batched tombstone read answers for each row in the order asked: the revision a
/// tombstone names, and nothing for an inline value, a deleted object, a fenced row that
/// was never written, or no row at all.
pub async fn tombstones_are_read_in_one_batch_in_order(hv: &dyn HvStore) {
    let (large, small, deleted, fenced, absent) = (path(), path(), path(), path(), path());
    let rev = Revision::mint(&large);
    hv.compare_and_write(
        &large,
        None,
        &HvWrite::tombstone(rev.clone()),
        &Version::mint(),
    )
    .await
    .unwrap();
    hv.compare_and_write(&small, None, &inline(b"x"), &Version::mint())
        .await
        .unwrap();
    let gone = Revision::mint(&deleted);
    let v = Version::mint();
    hv.compare_and_write(&deleted, None, &HvWrite::tombstone(gone.clone()), &v)
        .await
        .unwrap();
    hv.compare_and_write(&deleted, Some(&v), &HvWrite::Delete, &Version::mint())
        .await
        .unwrap();
    hv.fence(&fenced, &Revision::mint(&fenced)).await.unwrap();
    let asked = [absent, large.clone(), deleted, small, fenced, large];
    assert_eq!(
        hv.tombstones(&asked).await.unwrap(),
        vec![None, Some(rev.clone()), None, None, None, Some(rev)],
    );
    assert_eq!(hv.tombstones(&[]).await.unwrap(), vec![]);
}

/// A range scan pages through exactly the rows of the range that hold a tombstone, in key
/// order, with the revision each names: not inline values, deleted objects or fenced rows.
pub async fn a_tombstone_scan_pages_through_its_range(hv: &dyn HvStore) {
    use crate::lt::NameRange;
    let dir = format!("scan{}/", uuid::Uuid::now_v7().simple());
    let at = |s: &str| ObjectPath::new(format!("{dir}{s}")).unwrap();
    let mut expected = Vec::new();
    for name in ["b1", "b2", "c1", "c2", "c3"] {
        let p = at(name);
        let rev = Revision::mint(&p);
        hv.compare_and_write(&p, None, &HvWrite::tombstone(rev.clone()), &Version::mint())
            .await
            .unwrap();
        expected.push((p, rev));
    }
    for name in ["a1", "d1"] {
        let p = at(name);
        hv.compare_and_write(
            &p,
            None,
            &HvWrite::tombstone(Revision::mint(&p)),
            &Version::mint(),
        )
        .await
        .unwrap();
    }
    hv.compare_and_write(&at("b3"), None, &inline(b"x"), &Version::mint())
        .await
        .unwrap();
    let v = Version::mint();
    let gone = at("c0");
    hv.compare_and_write(&gone, None, &HvWrite::tombstone(Revision::mint(&gone)), &v)
        .await
        .unwrap();
    hv.compare_and_write(&gone, Some(&v), &HvWrite::Delete, &Version::mint())
        .await
        .unwrap();
    hv.fence(&at("c4"), &Revision::mint(&at("c4")))
        .await
        .unwrap();
    let range = NameRange {
        prefix: dir.clone(),
        start: Some(format!("{dir}b")),
        end: Some(format!("{dir}d")),
    };
    let mut seen = Vec::new();
    let mut after: Option<ObjectPath> = None;
    for _ in 0..10 {
        let page = hv.scan_tombstones(&range, after.as_ref(), 2).await.unwrap();
        assert!(page.tombstones.len() <= 2);
        seen.extend(page.tombstones);
        after = page.resume_after;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen, expected);
    let whole = hv
        .scan_tombstones(&NameRange::prefix(dir.clone()), None, 100)
        .await
        .unwrap();
    assert_eq!(whole.tombstones.len(), 7, "{whole:?}");
    assert_eq!(whole.resume_after, None);
}

pub async fn a_deleted_row_keeps_its_version(hv: &dyn HvStore) {
    let p = path();
    assert!(
        !hv.fence(&p, &Revision::mint(&p)).await.unwrap(),
        "an absent row names no revision"
    );
    let fenced = row(hv, &p).await;
    assert_eq!(fenced.value, None, "a fence alone is not object data");
    assert!(fenced.version.is_some(), "a fence leaves a version");
    let out = hv
        .compare_and_write(&p, None, &inline(b"late"), &Version::mint())
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict, "the row is no longer unwritten");

    let q = path();
    let v = Version::mint();
    hv.compare_and_write(&q, None, &inline(b"x"), &v)
        .await
        .unwrap();
    let d = Version::mint();
    let out = hv
        .compare_and_write(&q, Some(&v), &HvWrite::Delete, &d)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    let deleted = row(hv, &q).await;
    assert_eq!(deleted.value, None);
    assert_eq!(deleted.version, Some(d), "a delete leaves its version");
    let out = hv
        .compare_and_write(&q, None, &inline(b"late"), &Version::mint())
        .await
        .unwrap();
    assert_eq!(
        out,
        CasOutcome::Conflict,
        "an emptied row is not a never-written one"
    );
}

pub async fn a_straggler_never_lands_after_a_later_write(hv: &dyn HvStore) {
    let p = path();
    let (mine, theirs) = (Revision::mint(&p), Revision::mint(&p));
    let new_version = Version::of_change(&ChangeId::mint());
    let write = HvWrite::tombstone(mine.clone());
    let out = hv
        .compare_and_write(&p, None, &write, &new_version)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    // Others move the row on and back to a state the write's expectation once described
    // (A→B→A: no value again).
    let v = Version::mint();
    hv.compare_and_write(&p, Some(&new_version), &HvWrite::tombstone(theirs), &v)
        .await
        .unwrap();
    hv.compare_and_write(&p, Some(&v), &HvWrite::Delete, &Version::mint())
        .await
        .unwrap();
    // A late attempt of the first write must not land again, however late.
    let out = hv
        .compare_and_write(&p, None, &write, &new_version)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);
    assert_eq!(
        hv.read(&p).await.unwrap(),
        None,
        "the straggler re-applied a superseded write"
    );
}

fn meta(tag: &str) -> ObjectMeta {
    ObjectMeta::default()
        .with_content_type("application/x-tiersweep-test")
        .unwrap()
        .with_user("tag", tag)
        .unwrap()
        .with_expiry(crate::model::Timestamp(1_800_000_000_000))
}

/// Metadata is written, replaced and removed with the data, and a fence leaves it alone.
pub async fn metadata_travels_with_the_data(hv: &dyn HvStore) {
    let p = path();
    let v1 = Version::mint();
    let small = HvWrite::Inline(Bytes::from_static(b"small"), meta("inline"));
    hv.compare_and_write(&p, None, &small, &v1).await.unwrap();
    assert_eq!(row(hv, &p).await.meta, meta("inline"));

    // A tombstone with other metadata replaces it; one without clears it.
    let rev = Revision::mint(&p);
    let v2 = Version::mint();
    let large = HvWrite::Tombstone(rev.clone(), meta("large"));
    hv.compare_and_write(&p, Some(&v1), &large, &v2)
        .await
        .unwrap();
    let now = row(hv, &p).await;
    assert_eq!(now.value, Some(HvValue::Tombstone(rev.clone())));
    assert_eq!(now.meta, meta("large"));
    assert!(hv.fence(&p, &rev).await.unwrap());
    let fenced = row(hv, &p).await;
    assert_eq!(fenced.meta, meta("large"), "a fence leaves the metadata");

    let v3 = Version::mint();
    hv.compare_and_write(&p, fenced.version.as_ref(), &inline(b"plain"), &v3)
        .await
        .unwrap();
    assert!(
        row(hv, &p).await.meta.is_empty(),
        "a write without metadata clears it"
    );

    // A refused write changes no metadata either.
    let out = hv
        .compare_and_write(&p, Some(&v1), &small, &Version::mint())
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);
    assert!(row(hv, &p).await.meta.is_empty());

    hv.compare_and_write(&p, Some(&v3), &large_with(&p, "gone"), &Version::mint())
        .await
        .unwrap();
    let v = row(hv, &p).await.version;
    hv.compare_and_write(&p, v.as_ref(), &HvWrite::Delete, &Version::mint())
        .await
        .unwrap();
    let deleted = row(hv, &p).await;
    assert_eq!((deleted.value, deleted.meta), (None, ObjectMeta::default()));
}

fn large_with(p: &ObjectPath, tag: &str) -> HvWrite {
    HvWrite::Tombstone(Revision::mint(p), meta(tag))
}
