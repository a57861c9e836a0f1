//! HV store conformance.

use bytes::Bytes;

use crate::hv::{CasOutcome, Expected, HvStore, HvWrite};
use crate::model::{ChangeId, HvValue, ObjectPath, Revision};

fn path() -> ObjectPath {
    ObjectPath::new(format!("conformance/{}", uuid::Uuid::now_v7())).unwrap()
}

pub async fn absent_reads_none(hv: &dyn HvStore) {
    assert_eq!(hv.read(&path()).await.unwrap(), None);
}

pub async fn cas_applies_on_match_and_conflicts_otherwise(hv: &dyn HvStore) {
    let p = path();
    let inline = HvWrite::Inline(Bytes::from_static(b"small"));
    let out = hv
        .compare_and_write(&p, &Expected::NoTombstone, &inline, None)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    assert_eq!(
        hv.read(&p).await.unwrap(),
        Some(HvValue::Inline(Bytes::from_static(b"small")))
    );

    let rev = Revision::mint(&p);
    let wrong = Expected::Tombstone(Revision::mint(&p));
    let out = hv
        .compare_and_write(&p, &wrong, &HvWrite::Tombstone(rev.clone()), None)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);

    let out = hv
        .compare_and_write(
            &p,
            &Expected::NoTombstone,
            &HvWrite::Tombstone(rev.clone()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    assert_eq!(
        hv.read(&p).await.unwrap(),
        Some(HvValue::Tombstone(rev.clone()))
    );

    // An inline write over a tombstone must name the tombstone, and the right one, with
    // or without a change to fence.
    let out = hv
        .compare_and_write(&p, &Expected::NoTombstone, &inline, None)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Conflict);
    let other = Expected::Tombstone(Revision::mint(&p));
    for change in [None, Some(ChangeId::mint())] {
        let out = hv
            .compare_and_write(&p, &other, &inline, change.as_ref())
            .await
            .unwrap();
        assert_eq!(
            out,
            CasOutcome::Conflict,
            "another tombstone, change {change:?}"
        );
    }
    assert_eq!(
        hv.read(&p).await.unwrap(),
        Some(HvValue::Tombstone(rev.clone()))
    );
    let out = hv
        .compare_and_write(&p, &Expected::Tombstone(rev), &HvWrite::Delete, None)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    assert_eq!(hv.read(&p).await.unwrap(), None);
}

pub async fn retried_cas_is_idempotent(hv: &dyn HvStore) {
    let p = path();
    let (a, b) = (Revision::mint(&p), Revision::mint(&p));
    let change = ChangeId::mint();
    let first = HvWrite::Tombstone(a.clone());
    for _ in 0..2 {
        let out = hv
            .compare_and_write(&p, &Expected::NoTombstone, &first, Some(&change))
            .await
            .unwrap();
        assert_eq!(out, CasOutcome::Applied);
    }
    let second = HvWrite::Tombstone(b.clone());
    for _ in 0..2 {
        let out = hv
            .compare_and_write(&p, &Expected::Tombstone(a.clone()), &second, None)
            .await
            .unwrap();
        assert_eq!(
            out,
            CasOutcome::Applied,
            "a retry succeeds because the row holds the target"
        );
    }
    assert_eq!(
        hv.read(&p).await.unwrap(),
        Some(HvValue::Tombstone(b.clone()))
    );
    for _ in 0..2 {
        let out = hv
            .compare_and_write(&p, &Expected::Tombstone(b.clone()), &HvWrite::Delete, None)
            .await
            .unwrap();
        assert_eq!(out, CasOutcome::Applied);
    }
}

pub async fn fence_refuses_the_fenced_change_only(hv: &dyn HvStore) {
    let p = path();
    let old = Revision::mint(&p);
    hv.compare_and_write(
        &p,
        &Expected::NoTombstone,
        &HvWrite::Tombstone(old.clone()),
        None,
    )
    .await
    .unwrap();
    let (fenced, other) = (ChangeId::mint(), ChangeId::mint());
    let seen = hv.fence(&p, &fenced).await.unwrap();
    assert_eq!(
        seen,
        Some(HvValue::Tombstone(old.clone())),
        "fence returns what the row holds"
    );
    let fenced_write = HvWrite::Tombstone(Revision::mint(&p));
    let out = hv
        .compare_and_write(
            &p,
            &Expected::Tombstone(old.clone()),
            &fenced_write,
            Some(&fenced),
        )
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Fenced);
    assert_eq!(
        hv.read(&p).await.unwrap(),
        Some(HvValue::Tombstone(old.clone()))
    );
    // Fencing twice is fine and changes nothing.
    assert_eq!(
        hv.fence(&p, &fenced).await.unwrap(),
        Some(HvValue::Tombstone(old.clone()))
    );

    let new = Revision::mint(&p);
    let out = hv
        .compare_and_write(
            &p,
            &Expected::Tombstone(old),
            &HvWrite::Tombstone(new.clone()),
            Some(&other),
        )
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    assert_eq!(hv.read(&p).await.unwrap(), Some(HvValue::Tombstone(new)));
}

pub async fn fences_survive_deletes(hv: &dyn HvStore) {
    let p = path();
    let fenced = ChangeId::mint();
    assert_eq!(
        hv.fence(&p, &fenced).await.unwrap(),
        None,
        "fencing an absent row"
    );
    assert_eq!(
        hv.read(&p).await.unwrap(),
        None,
        "a fence alone is not object data"
    );
    let out = hv
        .compare_and_write(&p, &Expected::NoTombstone, &HvWrite::Delete, None)
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    let late = HvWrite::Tombstone(Revision::mint(&p));
    let out = hv
        .compare_and_write(&p, &Expected::NoTombstone, &late, Some(&fenced))
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Fenced, "a delete must not lift a fence");
    assert_eq!(hv.read(&p).await.unwrap(), None);
}

pub async fn a_change_writes_at_most_once(hv: &dyn HvStore) {
    let p = path();
    let (mine, theirs) = (Revision::mint(&p), Revision::mint(&p));
    let change = ChangeId::mint();
    let write = HvWrite::Tombstone(mine.clone());
    let out = hv
        .compare_and_write(&p, &Expected::NoTombstone, &write, Some(&change))
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    // Others move the row on and back to a state our expectation matches (A→B→A).
    hv.compare_and_write(
        &p,
        &Expected::Tombstone(mine.clone()),
        &HvWrite::Tombstone(theirs.clone()),
        None,
    )
    .await
    .unwrap();
    hv.compare_and_write(&p, &Expected::Tombstone(theirs), &HvWrite::Delete, None)
        .await
        .unwrap();
    // A late retry of our write reports success (it did land once) but must not land again.
    let out = hv
        .compare_and_write(&p, &Expected::NoTombstone, &write, Some(&change))
        .await
        .unwrap();
    assert_eq!(out, CasOutcome::Applied);
    assert_eq!(
        hv.read(&p).await.unwrap(),
        None,
        "the retry re-applied a superseded write"
    );
}
