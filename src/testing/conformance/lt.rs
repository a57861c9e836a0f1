//! LT store conformance.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::lt::LtStore;
use crate::model::{ObjectPath, Revision};

fn rev() -> Revision {
    Revision::mint(&ObjectPath::new(format!("conformance/{}", uuid::Uuid::now_v7())).unwrap())
}

fn rev_under(dir: &str) -> Revision {
    Revision::mint(&ObjectPath::new(format!("{dir}/{}", uuid::Uuid::now_v7())).unwrap())
}

pub async fn put_get_exists_delete(lt: &dyn LtStore) {
    let r = rev();
    assert!(!lt.exists(&r).await.unwrap());
    assert_eq!(lt.get(&r).await.unwrap(), None);
    lt.put(&r, Bytes::from_static(b"payload")).await.unwrap();
    assert!(lt.exists(&r).await.unwrap());
    assert_eq!(
        lt.get(&r).await.unwrap(),
        Some(Bytes::from_static(b"payload"))
    );
    lt.delete(&r).await.unwrap();
    assert!(!lt.exists(&r).await.unwrap());
    assert_eq!(lt.get(&r).await.unwrap(), None);
}

/// A revision is written once: a second put of it succeeds (an earlier attempt of the same
/// upload landed) and leaves the first bytes, so a straggling attempt can never overwrite
/// a blob that is there.
pub async fn a_put_never_overwrites(lt: &dyn LtStore) {
    let r = rev();
    lt.put(&r, Bytes::from_static(b"first")).await.unwrap();
    lt.put(&r, Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(
        lt.get(&r).await.unwrap(),
        Some(Bytes::from_static(b"first"))
    );
    lt.delete(&r).await.unwrap();
}

pub async fn delete_of_missing_blob_succeeds(lt: &dyn LtStore) {
    let r = rev();
    lt.delete(&r).await.unwrap();
    lt.put(&r, Bytes::from_static(b"x")).await.unwrap();
    lt.delete(&r).await.unwrap();
    lt.delete(&r).await.unwrap();
}

pub async fn list_pages_through_everything(lt: &dyn LtStore) {
    let dir = format!("listing/{}", uuid::Uuid::now_v7());
    let mut put = BTreeSet::new();
    for _ in 0..25 {
        let r = rev_under(&dir);
        lt.put(&r, Bytes::from_static(b"x")).await.unwrap();
        put.insert(r.as_str().to_owned());
    }
    let outside = rev();
    lt.put(&outside, Bytes::from_static(b"x")).await.unwrap();
    let mut listed = BTreeSet::new();
    let mut token = None;
    loop {
        let page = lt.list(&format!("{dir}/"), token).await.unwrap();
        listed.extend(page.names);
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(
        put, listed,
        "a prefix listing returns exactly the blobs under the prefix"
    );
}
