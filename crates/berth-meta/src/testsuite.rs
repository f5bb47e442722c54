//! The conformance suite every metadata backend must pass: one `pub async fn` per
//! behaviour, each given fresh, empty stores.
//!
//! A backend runs all of them with one `#[tokio::test]` each through
//! [`metadata_store_suite!`](crate::metadata_store_suite),
//! [`account_store_suite!`](crate::account_store_suite) and
//! [`stats_store_suite!`](crate::stats_store_suite) and
//! [`scan_store_suite!`](crate::scan_store_suite), so that a function added here is run
//! by every backend. Nothing here may depend on one backend: stores are used only through
//! their traits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use berth_oci::{Digest, RepoName, Tag};
use bytes::Bytes;

use crate::scans::{DbStamp, ScanOutcome, ScanState, ScanStore, SeverityCounts};
use crate::{
    Account, AccountKind, AccountStore, AuditEvent, DownloadKey, FetchKind, Gate, GroupBy,
    MetaError, MetadataStore, NewManifest, OutboxNew, OutboxStatus, Page, QuotaReservation,
    RequestKey, Reserved, ReservedKind, SignatureRecord, StatsStore, StoredGrant, TagChange,
    TagGuard, TagListing, Unlinked,
};

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn tags(names: &[&str]) -> Vec<Tag> {
    names.iter().map(|t| Tag::parse(t).unwrap()).collect()
}

fn manifest(content: &str, blobs: Vec<Digest>, subject: Option<Digest>) -> NewManifest {
    NewManifest {
        digest: Digest::sha256(content.as_bytes()),
        media_type: berth_oci::media_types::OCI_MANIFEST.into(),
        content: Bytes::from(content.to_owned()),
        blobs,
        children: vec![],
        subject,
        artifact_type: Some("application/x".into()),
        annotations_json: String::new(),
        version: None,
        platform: None,
        mirrored: false,
    }
}

fn page(last: Option<&str>, n: Option<usize>) -> Page {
    Page {
        last: last.map(str::to_owned),
        n,
    }
}

/// A manifest with several tags is stored with all of them or none: a missing blob
/// refuses the whole put and writes nothing.
pub async fn manifest_put_is_atomic(meta: Arc<dyn MetadataStore>) {
    let r = repo("team/app");
    let blob = Digest::sha256(b"layer");
    let m = manifest("m1", vec![blob.clone()], None);
    let both = tags(&["v1", "latest"]);
    match meta.manifest_put(&r, &m, &both, None).await {
        Err(MetaError::MissingReferences(d)) => assert_eq!(d, vec![blob.clone()]),
        other => panic!("expected missing references, got {other:?}"),
    }
    for t in &both {
        assert!(meta.manifest_by_tag(&r, t).await.unwrap().is_none());
    }
    assert!(meta
        .manifest_by_digest(&r, &m.digest)
        .await
        .unwrap()
        .is_none());
    assert!(meta.tags_of(&r, &m.digest).await.unwrap().is_empty());

    // A missing child manifest refuses the put too.
    let mut index = manifest("index", vec![], None);
    index.children = vec![m.digest.clone()];
    assert!(matches!(
        meta.manifest_put(&r, &index, &tags(&["multi"]), None).await,
        Err(MetaError::MissingReferences(d)) if d == vec![m.digest.clone()]
    ));

    meta.blob_link(&r, &blob, 5).await.unwrap();
    meta.manifest_put(&r, &m, &both, None).await.unwrap();
    for t in &both {
        let got = meta.manifest_by_tag(&r, t).await.unwrap().unwrap();
        assert_eq!(got.digest, m.digest);
        assert_eq!(got.content, m.content);
    }
    assert_eq!(
        meta.tags(&r, &Page::default()).await.unwrap().unwrap(),
        ["latest", "v1"]
    );
    meta.manifest_put(&r, &index, &tags(&["multi"]), None)
        .await
        .unwrap();
    // Deleting a manifest deletes its tags with it.
    assert!(meta.manifest_delete(&r, &index.digest, None).await.unwrap());
    assert!(!meta.manifest_delete(&r, &index.digest, None).await.unwrap());
    assert_eq!(
        meta.tags(&r, &Page::default()).await.unwrap().unwrap(),
        ["latest", "v1"]
    );
}

/// Concerned with tags whose names start with `r`; records every change it is asked
/// about and refuses those of `r-refused`.
struct Recording(Mutex<Vec<TagChange>>);

impl TagGuard for Recording {
    fn concerns(&self, tag: &str) -> bool {
        tag.starts_with('r')
    }

    fn check(&self, change: &TagChange) -> Result<(), String> {
        self.0.lock().unwrap().push(change.clone());
        if change.tag == "r-refused" {
            return Err("refused".into());
        }
        Ok(())
    }
}

/// A guard is asked only about the tags it concerns, sees every tag of the target, and
/// one refusal refuses the whole put (and a whole deletion).
pub async fn guard_refusals_refuse_the_whole_request(meta: Arc<dyn MetadataStore>) {
    let r = repo("a");
    let guard = Arc::new(Recording(Mutex::new(Vec::new())));
    let dyn_guard = || Some(guard.clone() as Arc<dyn TagGuard>);
    let m = manifest("m", vec![], None);
    // Unconcerned tags only: the guard is not asked at all.
    meta.manifest_put(&r, &m, &tags(&["x1", "x2"]), dyn_guard())
        .await
        .unwrap();
    assert!(guard.0.lock().unwrap().is_empty());
    // One concerned tag among others: asked once, with every tag of the target.
    meta.manifest_put(&r, &m, &tags(&["x3", "r1"]), dyn_guard())
        .await
        .unwrap();
    {
        let asked = guard.0.lock().unwrap();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].tag, "r1");
        assert!(asked[0].current.is_none());
        let new = asked[0].new.as_ref().unwrap();
        assert_eq!(new.tags, ["r1", "x1", "x2", "x3"]);
    }
    // A refusal refuses the whole request: the unconcerned tag beside it is not written.
    let e = meta
        .manifest_put(&r, &m, &tags(&["x4", "r-refused"]), dyn_guard())
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::TagRefused(_)));
    assert_eq!(
        meta.tags(&r, &Page::default()).await.unwrap().unwrap(),
        ["r1", "x1", "x2", "x3"]
    );
    guard.0.lock().unwrap().clear();
    // Deletions: unconcerned tags go without asking; a manifest's concerned tags are each
    // asked about.
    assert!(meta
        .tag_delete(&r, &Tag::parse("x1").unwrap(), dyn_guard())
        .await
        .unwrap());
    assert!(guard.0.lock().unwrap().is_empty());
    meta.manifest_put(&r, &m, &tags(&["r2"]), dyn_guard())
        .await
        .unwrap();
    guard.0.lock().unwrap().clear();
    assert!(meta
        .manifest_delete(&r, &m.digest, dyn_guard())
        .await
        .unwrap());
    {
        let asked = guard.0.lock().unwrap();
        let names: Vec<&str> = asked.iter().map(|c| c.tag.as_str()).collect();
        assert_eq!(names, ["r1", "r2"]);
        for c in asked.iter() {
            assert!(c.new.is_none());
            assert_eq!(c.current.as_ref().unwrap().tags, ["r1", "r2", "x2", "x3"]);
        }
    }
    // A refused tag deletion keeps the tag.
    let refused = manifest("refused", vec![], None);
    meta.manifest_put(&r, &refused, &tags(&["r-refused"]), None)
        .await
        .unwrap();
    assert!(matches!(
        meta.tag_delete(&r, &Tag::parse("r-refused").unwrap(), dyn_guard())
            .await,
        Err(MetaError::TagRefused(_))
    ));
    assert!(matches!(
        meta.manifest_delete(&r, &refused.digest, dyn_guard()).await,
        Err(MetaError::TagRefused(_))
    ));
    assert_eq!(
        meta.tags(&r, &Page::default()).await.unwrap().unwrap(),
        ["r-refused"]
    );
}

/// A gate that holds a push's tags unless `key` signed the manifest.
fn hold_unless(key: &str) -> Gate {
    Gate {
        hold_unless_signed_by: Some(vec![key.to_owned()]),
        signs: None,
    }
}

/// A gate that records the manifest being stored as a signature of `subject` by `key`.
fn signs(subject: &Digest, key: &str) -> Gate {
    Gate {
        hold_unless_signed_by: None,
        signs: Some(SignatureRecord {
            subject: subject.clone(),
            keys: vec![key.to_owned()],
        }),
    }
}

async fn visible(meta: &Arc<dyn MetadataStore>, r: &RepoName) -> Vec<String> {
    meta.tag_list(r, &Page::default(), TagListing::All)
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn pending_names(meta: &Arc<dyn MetadataStore>, r: &RepoName) -> Vec<String> {
    meta.pending_tags(r)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.tag)
        .collect()
}

/// Tags held by the gate are invisible (tags list, pull by tag) until a signature of
/// their manifest is stored; that same put makes all of them visible at once.
/// The collector never deletes a manifest whose release tags wait for its signature
/// (it has no visible tag, but it is meant to be revealed).
pub async fn the_collector_keeps_a_manifest_waiting_for_a_signature(meta: Arc<dyn MetadataStore>) {
    let r = repo("release/app");
    let m = manifest("image", vec![], None);
    meta.manifest_put_gated(&r, &m, &tags(&["1.0.0"]), None, &hold_unless("k1"))
        .await
        .unwrap();
    let gone = meta
        .gc_delete_manifests(&r, std::slice::from_ref(&m.digest), later())
        .await
        .unwrap();
    assert!(gone.is_empty(), "a waiting manifest was collected");
    assert_eq!(meta.pending_tags(&r).await.unwrap().len(), 1);
}

pub async fn gated_tags_wait_for_a_signature(meta: Arc<dyn MetadataStore>) {
    let r = repo("release/app");
    let m = manifest("image", vec![], None);
    let out = meta
        .manifest_put_gated(
            &r,
            &m,
            &tags(&["1.0.0", "latest"]),
            None,
            &hold_unless("k1"),
        )
        .await
        .unwrap();
    assert_eq!(out.held, ["1.0.0", "latest"]);
    assert!(visible(&meta, &r).await.is_empty());
    assert!(meta
        .manifest_by_tag(&r, &Tag::parse("1.0.0").unwrap())
        .await
        .unwrap()
        .is_none());
    // The manifest itself is stored: it can be signed by digest.
    assert!(meta
        .manifest_by_digest(&r, &m.digest)
        .await
        .unwrap()
        .is_some());
    let pending = meta.pending_tags(&r).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|p| p.digest == m.digest && p.since > 0));

    // A referrer that is not a verified signature reveals nothing.
    let other = manifest("sbom", vec![], Some(m.digest.clone()));
    let out = meta
        .manifest_put_gated(&r, &other, &[], None, &Gate::default())
        .await
        .unwrap();
    assert!(out.revealed.is_empty());
    assert_eq!(pending_names(&meta, &r).await, ["1.0.0", "latest"]);

    let sig = manifest("signature", vec![], Some(m.digest.clone()));
    let out = meta
        .manifest_put_gated(&r, &sig, &[], None, &signs(&m.digest, "k1"))
        .await
        .unwrap();
    assert_eq!(out.revealed, ["1.0.0", "latest"]);
    assert!(out.held.is_empty() && out.dropped.is_empty());
    assert_eq!(visible(&meta, &r).await, ["1.0.0", "latest"]);
    assert!(pending_names(&meta, &r).await.is_empty());
    let got = meta
        .manifest_by_tag(&r, &Tag::parse("latest").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, m.digest);
    let recorded = meta.recorded_signatures(&r, Some(&m.digest)).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (&recorded[0].signature, recorded[0].key.as_str()),
        (&sig.digest, "k1")
    );
}

/// A gated push finds a signature recorded before it (the order of a careful
/// publisher: push by digest, sign, then tag), but only one by an accepted key.
pub async fn a_recorded_signature_lets_gated_tags_through(meta: Arc<dyn MetadataStore>) {
    let r = repo("release/app");
    let m = manifest("image", vec![], None);
    meta.manifest_put(&r, &m, &[], None).await.unwrap();
    let sig = manifest("signature", vec![], Some(m.digest.clone()));
    meta.manifest_put_gated(&r, &sig, &[], None, &signs(&m.digest, "k1"))
        .await
        .unwrap();
    let out = meta
        .manifest_put_gated(&r, &m, &tags(&["2.0.0"]), None, &hold_unless("k2"))
        .await
        .unwrap();
    assert_eq!(
        out.held,
        ["2.0.0"],
        "a signature by another key does not count"
    );
    let out = meta
        .manifest_put_gated(&r, &m, &tags(&["2.0.0"]), None, &hold_unless("k1"))
        .await
        .unwrap();
    assert!(out.held.is_empty());
    assert_eq!(visible(&meta, &r).await, ["2.0.0"]);
    assert!(
        pending_names(&meta, &r).await.is_empty(),
        "a visible push drops the pending tag of its name"
    );
}

/// A tag is either visible or pending, and the newest push of a name decides; deleting
/// a pending tag or its manifest forgets it, and a visible tag stays where it was while
/// a newer push of its name waits.
pub async fn pending_tags_follow_the_newest_push(meta: Arc<dyn MetadataStore>) {
    let r = repo("release/app");
    let (a, b, c) = (
        manifest("a", vec![], None),
        manifest("b", vec![], None),
        manifest("c", vec![], None),
    );
    meta.manifest_put(&r, &a, &tags(&["latest"]), None)
        .await
        .unwrap();
    meta.manifest_put_gated(&r, &b, &tags(&["1.0.0", "latest"]), None, &hold_unless("k"))
        .await
        .unwrap();
    // The visible `latest` still serves `a` while `b` waits.
    let latest = Tag::parse("latest").unwrap();
    assert_eq!(
        meta.manifest_by_tag(&r, &latest)
            .await
            .unwrap()
            .unwrap()
            .digest,
        a.digest
    );
    meta.manifest_put_gated(&r, &c, &tags(&["1.0.0"]), None, &hold_unless("k"))
        .await
        .unwrap();
    let pending = meta.pending_tags(&r).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| (p.tag.as_str(), &p.digest))
            .collect::<Vec<_>>(),
        [("1.0.0", &c.digest), ("latest", &b.digest)]
    );
    // Deleting a pending tag by name works like deleting a tag.
    assert!(meta
        .tag_delete(&r, &Tag::parse("1.0.0").unwrap(), None)
        .await
        .unwrap());
    assert!(!meta
        .tag_delete(&r, &Tag::parse("1.0.0").unwrap(), None)
        .await
        .unwrap());
    // Deleting the manifest forgets its pending tags and its recorded signatures.
    let sig = manifest("sig-of-b", vec![], Some(b.digest.clone()));
    meta.manifest_put(&r, &sig, &[], None).await.unwrap();
    meta.manifest_put_gated(&r, &sig, &[], None, &signs(&c.digest, "k"))
        .await
        .unwrap();
    assert!(meta.manifest_delete(&r, &b.digest, None).await.unwrap());
    assert!(pending_names(&meta, &r).await.is_empty());
    assert_eq!(meta.recorded_signatures(&r, None).await.unwrap().len(), 1);
    assert!(meta.manifest_delete(&r, &sig.digest, None).await.unwrap());
    assert!(meta.recorded_signatures(&r, None).await.unwrap().is_empty());
    assert_eq!(visible(&meta, &r).await, ["latest"]);
}

/// Revealing asks the tag guard about each pending tag; a refused one is dropped and
/// reported, and neither the signature nor the other tags are refused with it.
pub async fn a_refused_reveal_drops_only_that_tag(meta: Arc<dyn MetadataStore>) {
    let r = repo("release/app");
    let m = manifest("image", vec![], None);
    meta.manifest_put_gated(
        &r,
        &m,
        &tags(&["r-refused", "r1", "x"]),
        None,
        &hold_unless("k"),
    )
    .await
    .unwrap();
    let guard: Arc<dyn TagGuard> = Arc::new(Recording(Mutex::new(Vec::new())));
    let sig = manifest("signature", vec![], Some(m.digest.clone()));
    let out = meta
        .manifest_put_gated(&r, &sig, &[], Some(guard), &signs(&m.digest, "k"))
        .await
        .unwrap();
    assert_eq!(out.revealed, ["r1", "x"]);
    assert_eq!(out.dropped.len(), 1);
    assert_eq!(out.dropped[0].0, "r-refused");
    assert_eq!(visible(&meta, &r).await, ["r1", "x"]);
    assert!(pending_names(&meta, &r).await.is_empty());
    assert!(meta
        .manifest_by_digest(&r, &sig.digest)
        .await
        .unwrap()
        .is_some());
}

/// A gated push and the signature of its manifest, sent at the same time, always end
/// with the tags visible: whichever transaction comes second sees the first.
pub async fn gate_and_signature_race_consistently(meta: Arc<dyn MetadataStore>) {
    for i in 0..40 {
        let r = repo(&format!("race/{i}"));
        let m = manifest(&format!("image-{i}"), vec![], None);
        meta.manifest_put(&r, &m, &[], None).await.unwrap();
        let sig = manifest(&format!("sig-{i}"), vec![], Some(m.digest.clone()));
        let (m1, r1, meta1) = (m.clone(), r.clone(), meta.clone());
        let push = tokio::spawn(async move {
            meta1
                .manifest_put_gated(
                    &r1,
                    &m1,
                    &tags(&["1.0.0", "1", "latest"]),
                    None,
                    &hold_unless("k"),
                )
                .await
                .unwrap()
        });
        let (r2, meta2, subject) = (r.clone(), meta.clone(), m.digest.clone());
        let sign = tokio::spawn(async move {
            meta2
                .manifest_put_gated(&r2, &sig, &[], None, &signs(&subject, "k"))
                .await
                .unwrap()
        });
        let (pushed, signed) = (push.await.unwrap(), sign.await.unwrap());
        // Either the push saw the signature (nothing held) or the signature revealed
        // everything the push held; never both nor neither.
        assert_eq!(
            pushed.held.is_empty(),
            signed.revealed.is_empty(),
            "{pushed:?} {signed:?}"
        );
        assert_eq!(visible(&meta, &r).await, ["1", "1.0.0", "latest"]);
        assert!(pending_names(&meta, &r).await.is_empty());
    }
}

/// The indexes listing a manifest as a child.
pub async fn index_parents_list_indexes_of_a_child(meta: Arc<dyn MetadataStore>) {
    let r = repo("a");
    let child = manifest("child", vec![], None);
    meta.manifest_put(&r, &child, &[], None).await.unwrap();
    let mut index = manifest("index", vec![], None);
    index.children = vec![child.digest.clone()];
    meta.manifest_put(&r, &index, &[], None).await.unwrap();
    assert_eq!(
        meta.index_parents(&r, &child.digest, 10).await.unwrap(),
        [index.digest.clone()]
    );
    assert!(meta
        .index_parents(&r, &index.digest, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(meta
        .index_parents(&repo("b"), &child.digest, 10)
        .await
        .unwrap()
        .is_empty());
}

/// A blob referenced by a manifest of the repository cannot be unlinked; once the
/// manifest is gone it can, and the last link orphans it.
pub async fn unlink_refuses_a_blob_in_use(meta: Arc<dyn MetadataStore>) {
    let r = repo("a");
    let blob = Digest::sha256(b"layer");
    let m = manifest("m", vec![blob.clone()], None);
    assert_eq!(
        meta.blob_unlink(&r, &blob).await.unwrap(),
        Unlinked::NotLinked
    );
    meta.blob_link(&r, &blob, 5).await.unwrap();
    meta.manifest_put(&r, &m, &tags(&["v1"]), None)
        .await
        .unwrap();
    match meta.blob_unlink(&r, &blob).await {
        Err(MetaError::BlobInUse(users)) => assert_eq!(users, [m.digest.to_string()]),
        other => panic!("expected blob in use, got {other:?}"),
    }
    // Nothing changed.
    assert_eq!(meta.blob_size(&r, &blob).await.unwrap(), Some(5));
    assert!(meta.manifest_delete(&r, &m.digest, None).await.unwrap());
    assert_eq!(
        meta.blob_unlink(&r, &blob).await.unwrap(),
        Unlinked::Removed { orphaned: true }
    );
    meta.blob_deletion_done(&blob).await.unwrap();
    assert_eq!(meta.blob_size(&r, &blob).await.unwrap(), None);
    assert_eq!(
        meta.blob_unlink(&r, &blob).await.unwrap(),
        Unlinked::NotLinked
    );
}

/// A manifest that an index lists as a child cannot be deleted while the index exists,
/// even unguarded; once the index is gone it can.
pub async fn delete_refuses_a_child_of_an_index(meta: Arc<dyn MetadataStore>) {
    let r = repo("a");
    let child = manifest("child", vec![], None);
    meta.manifest_put(&r, &child, &[], None).await.unwrap();
    let mut index = manifest("index", vec![], None);
    index.media_type = berth_oci::media_types::OCI_INDEX.into();
    index.children = vec![child.digest.clone()];
    meta.manifest_put(&r, &index, &tags(&["3.0.0"]), None)
        .await
        .unwrap();
    match meta.manifest_delete(&r, &child.digest, None).await {
        Err(MetaError::ManifestInUse(holders)) => {
            assert_eq!(holders, [index.digest.to_string()])
        }
        other => panic!("expected manifest in use, got {other:?}"),
    }
    assert!(meta
        .manifest_by_digest(&r, &child.digest)
        .await
        .unwrap()
        .is_some());
    assert!(meta.manifest_delete(&r, &index.digest, None).await.unwrap());
    assert!(meta.manifest_delete(&r, &child.digest, None).await.unwrap());
}

/// Tags come in lexical (byte) order, strictly after `last`, at most `n`; an unknown
/// repository has no tag list at all.
pub async fn tags_paginate(meta: Arc<dyn MetadataStore>) {
    let r = repo("a");
    let base = manifest("base", vec![], None);
    meta.manifest_put(&r, &base, &tags(&["b", "a", "c", "B"]), None)
        .await
        .unwrap();
    assert_eq!(
        meta.tags(&r, &page(None, None)).await.unwrap().unwrap(),
        ["B", "a", "b", "c"]
    );
    assert_eq!(
        meta.tags(&r, &page(None, Some(2))).await.unwrap().unwrap(),
        ["B", "a"]
    );
    assert_eq!(
        meta.tags(&r, &page(Some("a"), Some(1)))
            .await
            .unwrap()
            .unwrap(),
        ["b"]
    );
    assert_eq!(
        meta.tags(&r, &page(Some("a"), None))
            .await
            .unwrap()
            .unwrap(),
        ["b", "c"]
    );
    assert!(meta
        .tags(&r, &page(Some("c"), None))
        .await
        .unwrap()
        .unwrap()
        .is_empty());
    assert!(meta
        .tags(&r, &page(None, Some(0)))
        .await
        .unwrap()
        .unwrap()
        .is_empty());
    assert!(meta
        .tags(&repo("nope"), &page(None, None))
        .await
        .unwrap()
        .is_none());
}

/// Repository names come in lexical order, strictly after `last`, at most `n`.
pub async fn repositories_paginate(meta: Arc<dyn MetadataStore>) {
    assert!(meta
        .repositories(&page(None, None))
        .await
        .unwrap()
        .is_empty());
    for name in ["team/b", "a", "team/a", "c"] {
        meta.blob_link(&repo(name), &Digest::sha256(name.as_bytes()), 1)
            .await
            .unwrap();
    }
    assert_eq!(
        meta.repositories(&page(None, None)).await.unwrap(),
        ["a", "c", "team/a", "team/b"]
    );
    assert_eq!(
        meta.repositories(&page(Some("c"), Some(1))).await.unwrap(),
        ["team/a"]
    );
    assert_eq!(
        meta.repositories(&page(Some("b"), None)).await.unwrap(),
        ["c", "team/a", "team/b"]
    );
    assert!(meta
        .repositories(&page(None, Some(0)))
        .await
        .unwrap()
        .is_empty());
}

/// Upload sessions: created, touched (answering their repository), listed as idle or
/// not, listed, and forgotten.
pub async fn upload_sessions(meta: Arc<dyn MetadataStore>) {
    let (a, b) = (repo("a"), repo("team/b"));
    assert_eq!(meta.upload_touch("u1").await.unwrap(), None);
    meta.upload_create("u1", &a).await.unwrap();
    meta.upload_create("u2", &b).await.unwrap();
    assert_eq!(meta.upload_touch("u1").await.unwrap().as_deref(), Some("a"));
    assert_eq!(
        meta.upload_touch("u2").await.unwrap().as_deref(),
        Some("team/b")
    );
    let mut idle = meta.uploads_idle(0).await.unwrap();
    idle.sort();
    assert_eq!(idle, ["u1", "u2"]);
    assert!(meta.uploads_idle(3600).await.unwrap().is_empty());
    let mut ids = meta.upload_ids().await.unwrap();
    ids.sort();
    assert_eq!(ids, ["u1", "u2"]);
    meta.upload_delete("u1").await.unwrap();
    // Forgetting an unknown session is not an error.
    meta.upload_delete("u1").await.unwrap();
    assert_eq!(meta.upload_touch("u1").await.unwrap(), None);
    assert_eq!(meta.upload_ids().await.unwrap(), ["u2"]);
}

/// Referrers of a subject, all of them or of one artifact type, with their size and
/// annotations; other repositories' referrers are not listed.
pub async fn referrers_filter_by_artifact_type(meta: Arc<dyn MetadataStore>) {
    let r = repo("a");
    let base = manifest("base", vec![], None);
    meta.manifest_put(&r, &base, &tags(&["v1"]), None)
        .await
        .unwrap();
    let sig = manifest("sig", vec![], Some(base.digest.clone()));
    let mut sbom = manifest("sbom", vec![], Some(base.digest.clone()));
    sbom.artifact_type = Some("application/spdx+json".into());
    sbom.annotations_json = r#"{"k":"v"}"#.into();
    meta.manifest_put(&r, &sig, &[], None).await.unwrap();
    meta.manifest_put(&r, &sbom, &[], None).await.unwrap();
    // The same referrer in another repository belongs to that repository only.
    let other = manifest("other", vec![], Some(base.digest.clone()));
    meta.manifest_put(&repo("b"), &other, &[], None)
        .await
        .unwrap();

    let mut all: Vec<Digest> = meta
        .referrers(&r, &base.digest, None)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.digest)
        .collect();
    all.sort_by_key(|d| d.to_string());
    let mut want = vec![sig.digest.clone(), sbom.digest.clone()];
    want.sort_by_key(|d| d.to_string());
    assert_eq!(all, want);

    let spdx = meta
        .referrers(&r, &base.digest, Some("application/spdx+json"))
        .await
        .unwrap();
    assert_eq!(spdx.len(), 1);
    assert_eq!(spdx[0].digest, sbom.digest);
    assert_eq!(spdx[0].size, sbom.content.len() as u64);
    assert_eq!(spdx[0].media_type, sbom.media_type);
    assert_eq!(
        spdx[0].artifact_type.as_deref(),
        Some("application/spdx+json")
    );
    assert_eq!(spdx[0].annotations_json, r#"{"k":"v"}"#);
    assert!(meta
        .referrers(&r, &base.digest, Some("other"))
        .await
        .unwrap()
        .is_empty());
    assert!(meta
        .referrers(&r, &sig.digest, None)
        .await
        .unwrap()
        .is_empty());
}

/// The manifests cosign v2 keeps under `sha256-<hex>.sig`, `.att` and `.sbom` are
/// referrers of `sha256:<hex>`: listed with their artifact type and annotations, once
/// even when they also name the subject, filtered by artifact type, following the tag
/// when it moves or goes, and only in their repository.
pub async fn legacy_artifact_tags_are_referrers(meta: Arc<dyn MetadataStore>) {
    let r = repo("a");
    let base = manifest("base", vec![], None);
    let other = manifest("other base", vec![], None);
    for m in [&base, &other] {
        meta.manifest_put(&r, m, &[], None).await.unwrap();
    }
    let hex = base.digest.hex().to_owned();
    let mut sig = manifest("legacy sig", vec![], None);
    sig.artifact_type = Some("application/vnd.oci.image.config.v1+json".into());
    sig.annotations_json = r#"{"k":"v"}"#.into();
    meta.manifest_put(&r, &sig, &tags(&[&format!("sha256-{hex}.sig")]), None)
        .await
        .unwrap();
    // An attestation that names its subject and is tagged too is listed once.
    let mut att = manifest("att", vec![], Some(base.digest.clone()));
    att.artifact_type = Some("application/vnd.in-toto+json".into());
    meta.manifest_put(&r, &att, &tags(&[&format!("sha256-{hex}.att")]), None)
        .await
        .unwrap();
    // The same tag in another repository belongs to that one.
    let elsewhere = manifest("elsewhere", vec![], None);
    meta.manifest_put(
        &repo("b"),
        &elsewhere,
        &tags(&[&format!("sha256-{hex}.sbom")]),
        None,
    )
    .await
    .unwrap();

    let listed = meta.referrers(&r, &base.digest, None).await.unwrap();
    let mut digests: Vec<String> = listed.iter().map(|x| x.digest.to_string()).collect();
    digests.sort();
    let mut want = vec![sig.digest.to_string(), att.digest.to_string()];
    want.sort();
    assert_eq!(digests, want);
    let s = listed.iter().find(|x| x.digest == sig.digest).unwrap();
    assert_eq!(s.size, sig.content.len() as u64);
    assert_eq!(s.media_type, sig.media_type);
    assert_eq!(
        s.artifact_type.as_deref(),
        Some("application/vnd.oci.image.config.v1+json")
    );
    assert_eq!(s.annotations_json, r#"{"k":"v"}"#);

    let only_att = meta
        .referrers(&r, &base.digest, Some("application/vnd.in-toto+json"))
        .await
        .unwrap();
    assert_eq!(only_att.len(), 1);
    assert_eq!(only_att[0].digest, att.digest);
    assert!(meta
        .referrers(&r, &other.digest, None)
        .await
        .unwrap()
        .is_empty());

    // Moving the tag moves the referrer; deleting it removes it.
    let sig2 = manifest("legacy sig, appended", vec![], None);
    meta.manifest_put(&r, &sig2, &tags(&[&format!("sha256-{hex}.sig")]), None)
        .await
        .unwrap();
    let now: Vec<Digest> = meta
        .referrers(&r, &base.digest, Some("application/x"))
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.digest)
        .collect();
    assert_eq!(now, vec![sig2.digest.clone()]);
    assert!(meta
        .tag_delete(&r, &tags(&[&format!("sha256-{hex}.sig")])[0], None)
        .await
        .unwrap());
    let left: Vec<Digest> = meta
        .referrers(&r, &base.digest, None)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.digest)
        .collect();
    assert_eq!(left, vec![att.digest.clone()]);
}

/// cosign v2 artifact tags and the referrers tag schema's tags are left out of the
/// default tags list, pages included, and listed with [`crate::TagListing::All`].
pub async fn artifact_tags_are_hidden_from_the_default_list(meta: Arc<dyn MetadataStore>) {
    use crate::TagListing;
    let r = repo("a");
    let hex = Digest::sha256(b"subject").hex().to_owned();
    let hidden = [
        format!("sha256-{hex}"),
        format!("sha256-{hex}.att"),
        format!("sha256-{hex}.sbom"),
        format!("sha256-{hex}.sig"),
        format!("sha512-{hex}"),
    ];
    let visible = ["1.0", "sha256-abc", "sha256-abc.sig", "zz"];
    let mut names: Vec<&str> = hidden.iter().map(String::as_str).collect();
    names.extend(visible);
    let m = manifest("m", vec![], None);
    meta.manifest_put(&r, &m, &tags(&names), None)
        .await
        .unwrap();

    assert_eq!(
        meta.tags(&r, &Page::default()).await.unwrap().unwrap(),
        visible
    );
    assert_eq!(
        meta.tag_list(&r, &Page::default(), TagListing::Visible)
            .await
            .unwrap()
            .unwrap(),
        visible
    );
    // Pages count visible tags only: the hidden ones between "1.0" and "sha256-abc"
    // do not make a page short.
    assert_eq!(
        meta.tags(&r, &page(Some("1.0"), Some(2)))
            .await
            .unwrap()
            .unwrap(),
        ["sha256-abc", "sha256-abc.sig"]
    );
    let mut all: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(
        meta.tag_list(&r, &Page::default(), TagListing::All)
            .await
            .unwrap()
            .unwrap(),
        all
    );
    assert_eq!(
        meta.tag_list(&r, &page(Some("1.0"), Some(1)), TagListing::All)
            .await
            .unwrap()
            .unwrap(),
        [all[1].clone()]
    );
    // Hidden tags still resolve and still count for the manifest.
    assert_eq!(
        meta.manifest_by_tag(&r, &tags(&[&hidden[3]])[0])
            .await
            .unwrap()
            .unwrap()
            .digest,
        m.digest
    );
    assert_eq!(
        meta.tags_of(&r, &m.digest).await.unwrap().len(),
        names.len()
    );
    assert!(meta
        .tag_list(&repo("missing"), &Page::default(), TagListing::All)
        .await
        .unwrap()
        .is_none());
}

/// A claim taken before the last link goes keeps the bytes from being orphaned; the
/// tombstone of an orphaning unlink refuses claims and plain links until the deletion
/// is done.
pub async fn claims_block_orphaning_and_tombstones_block_claims(meta: Arc<dyn MetadataStore>) {
    let (a, b) = (repo("a"), repo("b"));
    let d = Digest::sha256(b"layer");
    meta.blob_link(&a, &d, 5).await.unwrap();
    let claim = meta.blob_claim(&d).await.unwrap();
    assert_eq!(claim.digest, d);
    // The last link goes while a push is placing the bytes: they are not orphaned.
    assert_eq!(
        meta.blob_unlink(&a, &d).await.unwrap(),
        Unlinked::Removed { orphaned: false }
    );
    meta.blob_link_claimed(&claim, &b, 5, None).await.unwrap();
    assert_eq!(meta.blob_size(&b, &d).await.unwrap(), Some(5));
    // The claim ended with the link: unlinking the last link now orphans the bytes.
    assert_eq!(
        meta.blob_unlink(&b, &d).await.unwrap(),
        Unlinked::Removed { orphaned: true }
    );
    // While the bytes are being deleted, nothing may claim or link the digest.
    assert!(matches!(meta.blob_claim(&d).await, Err(MetaError::BlobBusy(x)) if x == d));
    assert!(matches!(
        meta.blob_link(&a, &d, 5).await,
        Err(MetaError::BlobBusy(_))
    ));
    assert_eq!(meta.blob_size(&a, &d).await.unwrap(), None);
    // Other digests are not affected.
    let other = Digest::sha256(b"other");
    let c = meta.blob_claim(&other).await.unwrap();
    meta.blob_link_claimed(&c, &a, 1, None).await.unwrap();
    meta.blob_deletion_done(&d).await.unwrap();
    let again = meta.blob_claim(&d).await.unwrap();
    assert_ne!(again.id, claim.id);
    meta.blob_link_claimed(&again, &a, 5, None).await.unwrap();
    assert_eq!(meta.blob_size(&a, &d).await.unwrap(), Some(5));
}

/// Linking the bytes of an upload session ends the session in the same write; a lost
/// claim links nothing and leaves the session.
pub async fn a_claimed_link_ends_its_upload_session(meta: Arc<dyn MetadataStore>) {
    let a = repo("a");
    let d = Digest::sha256(b"uploaded");
    meta.upload_create("u1", &a).await.unwrap();
    meta.upload_create("u2", &a).await.unwrap();
    let claim = meta.blob_claim(&d).await.unwrap();
    meta.blob_claim_release(&claim).await.unwrap();
    assert!(matches!(
        meta.blob_link_claimed(&claim, &a, 8, Some("u1")).await,
        Err(MetaError::ClaimLost(_))
    ));
    assert_eq!(meta.upload_touch("u1").await.unwrap().as_deref(), Some("a"));
    let claim = meta.blob_claim(&d).await.unwrap();
    meta.blob_link_claimed(&claim, &a, 8, Some("u1"))
        .await
        .unwrap();
    assert_eq!(meta.blob_size(&a, &d).await.unwrap(), Some(8));
    assert_eq!(meta.upload_touch("u1").await.unwrap(), None);
    assert_eq!(meta.upload_touch("u2").await.unwrap().as_deref(), Some("a"));
}

/// Two live claims of one digest each protect the bytes until both have ended.
pub async fn every_live_claim_protects(meta: Arc<dyn MetadataStore>) {
    let a = repo("a");
    let d = Digest::sha256(b"layer");
    meta.blob_link(&a, &d, 5).await.unwrap();
    let first = meta.blob_claim(&d).await.unwrap();
    let second = meta.blob_claim(&d).await.unwrap();
    assert_ne!(first.id, second.id);
    meta.blob_claim_release(&first).await.unwrap();
    assert_eq!(
        meta.blob_unlink(&a, &d).await.unwrap(),
        Unlinked::Removed { orphaned: false }
    );
    meta.blob_claim_release(&second).await.unwrap();
    meta.blob_link(&a, &d, 5).await.unwrap();
    assert_eq!(
        meta.blob_unlink(&a, &d).await.unwrap(),
        Unlinked::Removed { orphaned: true }
    );
}

/// A released claim no longer protects its bytes, and cannot be linked.
pub async fn released_claims_neither_protect_nor_link(meta: Arc<dyn MetadataStore>) {
    let a = repo("a");
    let d = Digest::sha256(b"layer");
    meta.blob_link(&a, &d, 5).await.unwrap();
    let claim = meta.blob_claim(&d).await.unwrap();
    meta.blob_claim_release(&claim).await.unwrap();
    // Releasing twice is harmless.
    meta.blob_claim_release(&claim).await.unwrap();
    assert_eq!(
        meta.blob_unlink(&a, &d).await.unwrap(),
        Unlinked::Removed { orphaned: true }
    );
    meta.blob_deletion_done(&d).await.unwrap();
    assert!(matches!(
        meta.blob_link_claimed(&claim, &a, 5, None).await,
        Err(MetaError::ClaimLost(id)) if id == claim.id
    ));
    assert_eq!(meta.blob_size(&a, &d).await.unwrap(), None);
}

/// A mount links only what its source links, creating nothing otherwise.
pub async fn mount_links_only_what_the_source_links(meta: Arc<dyn MetadataStore>) {
    let (a, b) = (repo("a"), repo("b"));
    let d = Digest::sha256(b"layer");
    assert_eq!(meta.blob_mount(&a, &b, &d).await.unwrap(), None);
    // A refused mount creates no repository.
    assert!(meta
        .repositories(&Page::default())
        .await
        .unwrap()
        .is_empty());
    meta.blob_link(&a, &d, 7).await.unwrap();
    assert_eq!(meta.blob_mount(&a, &b, &d).await.unwrap(), Some(7));
    assert_eq!(meta.blob_size(&b, &d).await.unwrap(), Some(7));
    assert_eq!(
        meta.blob_unlink(&a, &d).await.unwrap(),
        Unlinked::Removed { orphaned: false }
    );
    assert_eq!(meta.blob_mount(&a, &b, &d).await.unwrap(), None);
    assert_eq!(
        meta.blob_unlink(&b, &d).await.unwrap(),
        Unlinked::Removed { orphaned: true }
    );
}

/// A mount racing the unlink of its source's last link: either the mount wins (and the
/// bytes are not orphaned) or the unlink does (and nothing was mounted).
pub async fn mount_and_unlink_race_consistently(meta: Arc<dyn MetadataStore>) {
    for i in 0..40u32 {
        let (a, b) = (repo("a"), repo("b"));
        let d = Digest::sha256(&i.to_le_bytes());
        meta.blob_link(&a, &d, 1).await.unwrap();
        let mount = {
            let (meta, a, b, d) = (meta.clone(), a.clone(), b.clone(), d.clone());
            tokio::spawn(async move { meta.blob_mount(&a, &b, &d).await.unwrap() })
        };
        let unlink = {
            let (meta, a, d) = (meta.clone(), a.clone(), d.clone());
            tokio::spawn(async move { meta.blob_unlink(&a, &d).await.unwrap() })
        };
        match (mount.await.unwrap(), unlink.await.unwrap()) {
            (Some(1), Unlinked::Removed { orphaned: false }) => {
                assert_eq!(meta.blob_size(&b, &d).await.unwrap(), Some(1));
            }
            (None, Unlinked::Removed { orphaned: true }) => {
                assert_eq!(meta.blob_size(&b, &d).await.unwrap(), None);
                meta.blob_deletion_done(&d).await.unwrap();
            }
            other => panic!("inconsistent mount and unlink: {other:?}"),
        }
    }
}

/// A claim racing the unlink of the last link: either the claim comes first (and the
/// bytes are not orphaned) or the unlink does (and the claim is refused).
pub async fn claim_and_unlink_race_consistently(meta: Arc<dyn MetadataStore>) {
    for i in 0..40u32 {
        let a = repo("a");
        let d = Digest::sha256(&i.to_le_bytes());
        meta.blob_link(&a, &d, 1).await.unwrap();
        let claim = {
            let (meta, d) = (meta.clone(), d.clone());
            tokio::spawn(async move { meta.blob_claim(&d).await })
        };
        let unlink = {
            let (meta, a, d) = (meta.clone(), a.clone(), d.clone());
            tokio::spawn(async move { meta.blob_unlink(&a, &d).await.unwrap() })
        };
        match (claim.await.unwrap(), unlink.await.unwrap()) {
            (Ok(c), Unlinked::Removed { orphaned: false }) => {
                meta.blob_link_claimed(&c, &a, 1, None).await.unwrap();
                assert_eq!(meta.blob_size(&a, &d).await.unwrap(), Some(1));
            }
            (Err(MetaError::BlobBusy(_)), Unlinked::Removed { orphaned: true }) => {
                meta.blob_deletion_done(&d).await.unwrap();
            }
            other => panic!("inconsistent claim and unlink: {other:?}"),
        }
    }
}

fn download(repo: &str, version: &str, platform: &str, client: &str, hour: i64) -> DownloadKey {
    DownloadKey {
        repo: repo.into(),
        version: version.into(),
        platform: platform.into(),
        client: client.into(),
        hour,
        ..DownloadKey::default()
    }
}

/// Download counters and served bytes add up across batches and are read grouped, from
/// a given hour on.
pub async fn downloads_add_and_query(stats: &dyn StatsStore) {
    let day2 = 24; // The first hour of 1970-01-02.
    stats
        .downloads_add(
            vec![
                (download("a", "1.0", "linux/amd64", "docker", day2), 2),
                (download("a", "1.0", "linux/arm64", "podman", day2 + 1), 1),
                (download("a", "2.0", "linux/amd64", "docker", day2 + 24), 4),
                (download("a", "0.9", "linux/amd64", "docker", day2 - 1), 100),
                (download("b", "1.0", "linux/amd64", "docker", day2), 1),
            ],
            vec![("a".into(), day2, 1000), ("a".into(), day2 - 1, 5)],
        )
        .await
        .unwrap();
    // A second batch adds to the same counters.
    stats
        .downloads_add(
            vec![(download("a", "1.0", "linux/amd64", "docker", day2), 3)],
            vec![("a".into(), day2, 24)],
        )
        .await
        .unwrap();
    stats.downloads_add(vec![], vec![]).await.unwrap();
    let s = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
    };
    assert_eq!(
        stats.downloads("a", day2, GroupBy::Version).await.unwrap(),
        s(&[("1.0", 6), ("2.0", 4)])
    );
    assert_eq!(
        stats.downloads("a", day2, GroupBy::Platform).await.unwrap(),
        s(&[("linux/amd64", 9), ("linux/arm64", 1)])
    );
    assert_eq!(
        stats.downloads("a", day2, GroupBy::Client).await.unwrap(),
        s(&[("docker", 9), ("podman", 1)])
    );
    assert_eq!(
        stats.downloads("a", day2, GroupBy::Day).await.unwrap(),
        s(&[("1970-01-02", 6), ("1970-01-03", 4)])
    );
    assert!(stats
        .downloads("nope", 0, GroupBy::Version)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(stats.bytes_served("a", day2).await.unwrap(), 1024);
    assert_eq!(stats.bytes_served("a", 0).await.unwrap(), 1029);
    assert_eq!(stats.bytes_served("nope", 0).await.unwrap(), 0);
    assert_eq!(
        stats.top_repositories(day2, 10).await.unwrap(),
        s(&[("a", 10), ("b", 1)])
    );
    assert_eq!(
        stats.top_repositories(0, 1).await.unwrap(),
        s(&[("a", 110)])
    );

    // Inspections are counted apart: never downloads, never in the top list.
    let inspection = |platform: &str, account: &str| DownloadKey {
        kind: FetchKind::Inspection,
        account: account.into(),
        ..download("a", "1.0", platform, "berth", day2)
    };
    let by = |account: &str, version: &str| DownloadKey {
        account: account.into(),
        ..download("a", version, "linux/amd64", "docker", day2 + 2)
    };
    stats
        .downloads_add(
            vec![
                (inspection("index", ""), 5),
                (inspection("linux/amd64", "carol"), 2),
                (by("carol", "1.0"), 1),
                (by("carol", "2.0"), 2),
                (by("dave", "1.0"), 7),
            ],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        stats
            .inspections("a", day2, GroupBy::Platform)
            .await
            .unwrap(),
        s(&[("index", 5), ("linux/amd64", 2)])
    );
    assert_eq!(
        stats.inspections("a", day2, GroupBy::Client).await.unwrap(),
        s(&[("berth", 7)])
    );
    assert_eq!(
        stats.downloads("a", day2, GroupBy::Version).await.unwrap(),
        s(&[("1.0", 14), ("2.0", 6)])
    );
    let t = |a: &str, v: &str, n: u64| (a.to_owned(), v.to_owned(), n);
    assert_eq!(
        stats.downloads_by_account("a", day2).await.unwrap(),
        vec![
            t("", "1.0", 6),
            t("", "2.0", 4),
            t("carol", "1.0", 1),
            t("carol", "2.0", 2),
            t("dave", "1.0", 7)
        ]
    );
    assert!(stats
        .downloads_by_account("b", day2 + 1)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        stats.top_repositories(day2, 10).await.unwrap(),
        s(&[("a", 20), ("b", 1)])
    );
}

/// Request counters add up across batches and are read by route, status class and
/// error code, from a given hour on.
pub async fn request_counters(stats: &dyn StatsStore) {
    let key = |repo: &str, hour: i64, route: &str, class: u16, code: &str| RequestKey {
        repo: repo.into(),
        hour,
        route: route.into(),
        class,
        code: code.into(),
    };
    stats
        .requests_add(vec![
            (key("a", 10, "manifest_get", 2, ""), 5),
            (key("a", 11, "manifest_get", 2, ""), 1),
            (key("a", 11, "manifest_get", 4, "MANIFEST_UNKNOWN"), 2),
            (key("a", 11, "blob_get", 2, ""), 7),
            (key("a", 9, "blob_get", 5, ""), 1),
            (key("b", 11, "blob_get", 2, ""), 3),
        ])
        .await
        .unwrap();
    stats
        .requests_add(vec![(key("a", 11, "blob_get", 2, ""), 1)])
        .await
        .unwrap();
    stats.requests_add(vec![]).await.unwrap();
    let got: Vec<(String, u16, String, u64)> = stats
        .requests("a", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, n)| {
            assert_eq!(k.repo, "a");
            (k.route, k.class, k.code, n)
        })
        .collect();
    let want: Vec<(String, u16, String, u64)> = [
        ("blob_get", 2, "", 8),
        ("manifest_get", 2, "", 6),
        ("manifest_get", 4, "MANIFEST_UNKNOWN", 2),
    ]
    .iter()
    .map(|(r, c, e, n)| ((*r).to_owned(), *c, (*e).to_owned(), *n))
    .collect();
    assert_eq!(got, want);
    assert!(stats.requests("nope", 0).await.unwrap().is_empty());
}

fn account(name: &str, kind: AccountKind) -> Account {
    Account {
        name: name.into(),
        kind,
        secret_hash: "h".into(),
        disabled: false,
        expires_at: None,
        created_at: 0,
    }
}

/// Accounts, their grants, public patterns and the audit log.
pub async fn accounts_grants_public_audit(accounts: &dyn AccountStore) {
    let db = accounts;
    assert_eq!(db.account_count().await.unwrap(), 0);
    db.account_create(&account("alice", AccountKind::User))
        .await
        .unwrap();
    let mut robot = account("ci", AccountKind::Robot);
    robot.expires_at = Some(4_000_000_000);
    db.account_create(&robot).await.unwrap();
    assert!(matches!(
        db.account_create(&account("alice", AccountKind::User))
            .await,
        Err(MetaError::Conflict(_))
    ));
    assert_eq!(db.account_count().await.unwrap(), 2);
    let ci = db.account_get("ci").await.unwrap().unwrap();
    assert_eq!(ci.kind, AccountKind::Robot);
    assert_eq!(ci.expires_at, Some(4_000_000_000));
    assert!(ci.created_at > 0, "0 means now");
    // A given creation time is kept, as `berth migrate` copies accounts (PostgreSQL
    // once replaced it with the time of the copy).
    let mut old = account("old", AccountKind::User);
    old.created_at = 1_600_000_000;
    db.account_create(&old).await.unwrap();
    assert_eq!(
        db.account_get("old").await.unwrap().unwrap().created_at,
        1_600_000_000
    );
    assert!(db.account_delete("old").await.unwrap());
    assert!(db.account_get("nobody").await.unwrap().is_none());
    assert_eq!(
        db.account_list()
            .await
            .unwrap()
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["alice", "ci"]
    );
    assert!(db.account_set_disabled("alice", true).await.unwrap());
    assert!(db.account_get("alice").await.unwrap().unwrap().disabled);
    assert!(!db.account_set_disabled("nobody", true).await.unwrap());
    assert!(db.account_set_secret("alice", "h2").await.unwrap());
    assert_eq!(
        db.account_get("alice").await.unwrap().unwrap().secret_hash,
        "h2"
    );
    assert!(!db.account_set_secret("nobody", "x").await.unwrap());
    assert!(db.grant_set("alice", "team/*", "pull,push").await.unwrap());
    assert!(db.grant_set("alice", "team/*", "pull").await.unwrap());
    assert!(db.grant_set("alice", "other", "pull").await.unwrap());
    assert!(!db.grant_set("nobody", "x", "pull").await.unwrap());
    assert_eq!(
        db.grants("alice").await.unwrap(),
        vec![
            StoredGrant {
                pattern: "other".into(),
                actions: "pull".into()
            },
            StoredGrant {
                pattern: "team/*".into(),
                actions: "pull".into()
            }
        ]
    );
    assert!(db.grant_remove("alice", "other").await.unwrap());
    assert!(!db.grant_remove("alice", "other").await.unwrap());
    db.public_add("pub/*").await.unwrap();
    db.public_add("pub/*").await.unwrap();
    db.public_add("a/*").await.unwrap();
    assert_eq!(db.public_patterns().await.unwrap(), ["a/*", "pub/*"]);
    assert!(db.public_remove("a/*").await.unwrap());
    assert!(!db.public_remove("a/*").await.unwrap());
    assert_eq!(db.public_patterns().await.unwrap(), ["pub/*"]);
    assert!(db.account_delete("alice").await.unwrap());
    assert!(!db.account_delete("alice").await.unwrap());
    assert!(db.grants("alice").await.unwrap().is_empty());
    assert_eq!(db.account_count().await.unwrap(), 1);
    for i in 0..3 {
        db.audit_append(&AuditEvent {
            actor: "a".into(),
            action: format!("e{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    db.audit_append(&AuditEvent {
        at: 1,
        actor: "old".into(),
        action: "ancient".into(),
        target: "t".into(),
        detail: "d".into(),
        client: "c".into(),
    })
    .await
    .unwrap();
    // The newest entries, newest last; `at` 0 means now.
    let log = db.audit_list(0, 2).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["e2", "ancient"]
    );
    assert_eq!(log[1].client, "c");
    let recent = db.audit_list(1_000_000, 10).await.unwrap();
    assert_eq!(
        recent.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["e0", "e1", "e2"]
    );
    assert!(recent.iter().all(|e| e.at >= 1_000_000));
    // Pruning deletes only what is older than the cutoff.
    assert_eq!(db.audit_prune(1_000_000).await.unwrap(), 1);
    assert_eq!(db.audit_prune(1_000_000).await.unwrap(), 0);
    assert_eq!(db.audit_list(0, 10).await.unwrap().len(), 3);
}

fn replication(
    rule: &str,
    repo: &str,
    reference: &str,
    op: crate::ReplicationOp,
) -> crate::ReplicationNew {
    crate::ReplicationNew {
        rule: rule.into(),
        repo: repo.into(),
        reference: reference.into(),
        op,
    }
}

/// Queued changes are due at once, oldest first, one row per (rule, repository,
/// reference): a newer change supersedes the pending row (its operation replaced, its
/// seq raised, its lag kept), and a success recorded for the older seq leaves the row
/// for the newer change. A claim returns the rows again to the same store (a restart
/// resumes); a success deletes and counts.
pub async fn replication_queue_coalesces_and_resumes(db: &dyn AccountStore) {
    use crate::ReplicationOp::{Copy, Delete};
    assert!(db.replication_status().await.unwrap().is_empty());
    db.replication_enqueue(
        &[
            replication("r1", "app", "v1", Copy),
            replication("r2", "app", "v1", Copy),
        ],
        1_000,
    )
    .await
    .unwrap();
    db.replication_enqueue(&[replication("r1", "app", "v2", Copy)], 2_000)
        .await
        .unwrap();
    assert!(db
        .replication_claim(999, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let due = db.replication_claim(2_000, 60_000, 10).await.unwrap();
    let keys: Vec<(&str, &str, i64)> = due
        .iter()
        .map(|t| (t.rule.as_str(), t.reference.as_str(), t.seq))
        .collect();
    assert_eq!(keys, [("r1", "v1", 1), ("r2", "v1", 1), ("r1", "v2", 1)]);
    assert!(due
        .iter()
        .all(|t| t.attempts == 0 && !t.dead && t.op == Copy));
    assert_eq!(due[0].created_ms, 1_000);
    // Claimed again by the same store: a restarted worker finds its rows.
    assert_eq!(db.replication_claim(2_000, 60_000, 10).await.unwrap(), due);

    // v1 moves while its copy runs: the row stays, for the newer change.
    db.replication_enqueue(&[replication("r1", "app", "v1", Copy)], 3_000)
        .await
        .unwrap();
    assert!(!db.replication_done(due[0].id, 1, 3_100).await.unwrap());
    let again = db.replication_claim(3_100, 60_000, 10).await.unwrap();
    let v1 = again
        .iter()
        .find(|t| t.rule == "r1" && t.reference == "v1")
        .unwrap();
    assert_eq!(
        (v1.id, v1.seq, v1.created_ms, v1.next_attempt_ms),
        (due[0].id, 2, 1_000, 3_000)
    );
    assert!(db.replication_done(v1.id, 2, 3_200).await.unwrap());
    assert!(!db.replication_done(v1.id, 2, 3_300).await.unwrap());

    // A deletion supersedes a pending copy.
    db.replication_enqueue(&[replication("r1", "app", "v2", Delete)], 4_000)
        .await
        .unwrap();
    let rows = db.replication_claim(4_000, 60_000, 10).await.unwrap();
    let v2 = rows.iter().find(|t| t.reference == "v2").unwrap();
    assert_eq!((v2.op, v2.seq), (Delete, 2));

    let status = db.replication_status().await.unwrap();
    assert_eq!(status.len(), 2);
    assert_eq!(
        (status[0].rule.as_str(), status[0].pending, status[0].copied),
        ("r1", 1, 2)
    );
    assert_eq!(status[0].oldest_pending_ms, Some(2_000));
    assert!(status[0].last_success_ms.unwrap() >= 3_100);
    assert_eq!(
        (status[1].rule.as_str(), status[1].pending, status[1].copied),
        ("r2", 1, 0)
    );
    assert_eq!(status[1].last_success_ms, None);
}

/// A failure counts an attempt, keeps its error and waits for its retry time; a
/// failure with no retry time is dead, never due, but visible, until the reference is
/// queued again, which revives it with a fresh lag.
pub async fn replication_failures_back_off_and_die(db: &dyn AccountStore) {
    use crate::ReplicationOp::Copy;
    db.replication_enqueue(
        &[
            replication("t", "app", "a", Copy),
            replication("t", "app", "b", Copy),
        ],
        1_000,
    )
    .await
    .unwrap();
    let due = db.replication_claim(1_000, 60_000, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(db
        .replication_failed(
            due[0].id,
            due[0].seq,
            "connection refused",
            Some(5_000),
            1_100
        )
        .await
        .unwrap());
    assert!(db
        .replication_failed(due[1].id, due[1].seq, "HTTP 500", None, 1_200)
        .await
        .unwrap());
    assert!(db
        .replication_claim(4_999, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let later = db.replication_claim(5_000, 60_000, 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].attempts, 1);
    assert_eq!(later[0].last_error.as_deref(), Some("connection refused"));

    let status = db.replication_status().await.unwrap();
    assert_eq!(status.len(), 1);
    let s = &status[0];
    assert_eq!(
        (s.pending, s.failing, s.dead, s.failures, s.copied),
        (1, 1, 1, 2, 0)
    );
    assert_eq!(s.oldest_pending_ms, Some(1_000));
    assert_eq!(s.last_failure_ms, Some(1_200));
    assert_eq!(s.last_error.as_deref(), Some("HTTP 500"));
    let failing = db.replication_failing(10).await.unwrap();
    assert_eq!(failing.len(), 2);
    assert_eq!(failing[0].reference, "b");
    assert!(failing[0].dead);
    assert_eq!(db.replication_failing(1).await.unwrap().len(), 1);

    // Queued again (a new push, a full sync): alive, due, no attempts, a new lag.
    db.replication_enqueue(&[replication("t", "app", "b", Copy)], 9_000)
        .await
        .unwrap();
    let due = db.replication_claim(9_000, 60_000, 10).await.unwrap();
    let b = due.iter().find(|t| t.reference == "b").unwrap();
    assert!(!b.dead);
    assert_eq!((b.attempts, b.created_ms, b.seq), (0, 9_000, 2));
    // An outcome of an older seq does not count against the newer change.
    assert!(db
        .replication_failed(b.id, 1, "late", Some(20_000), 9_100)
        .await
        .unwrap());
    let due = db.replication_claim(9_100, 60_000, 10).await.unwrap();
    let b = due.iter().find(|t| t.reference == "b").unwrap();
    assert_eq!((b.attempts, b.next_attempt_ms, b.dead), (0, 9_000, false));
    assert!(db
        .replication_failed(b.id, 2, "gone", Some(20_000), 9_200)
        .await
        .unwrap());
    assert!(!db
        .replication_failed(b.id + 1_000, 1, "x", None, 9_300)
        .await
        .unwrap());
}

fn delivery(hook: &str, event: &str) -> OutboxNew {
    OutboxNew {
        hook: hook.into(),
        event_id: event.into(),
        event_type: "dev.berth.test".into(),
        body: format!("{{\"id\":\"{event}\"}}"),
    }
}

/// Added deliveries are due at once, oldest first; a failure counts an attempt and
/// waits for its retry time; a success deletes; a failure with no retry time is dead
/// and never due again.
pub async fn outbox_delivers_retries_and_gives_up(db: &dyn AccountStore) {
    db.outbox_add(&[delivery("a", "e1"), delivery("b", "e1")], 1_000)
        .await
        .unwrap();
    db.outbox_add(&[delivery("a", "e2")], 2_000).await.unwrap();
    assert!(db.outbox_due(999, 10).await.unwrap().is_empty());
    let due = db.outbox_due(2_000, 10).await.unwrap();
    let names: Vec<(&str, &str)> = due
        .iter()
        .map(|e| (e.hook.as_str(), e.event_id.as_str()))
        .collect();
    assert_eq!(names, [("a", "e1"), ("b", "e1"), ("a", "e2")]);
    assert_eq!(due[0].body, r#"{"id":"e1"}"#);
    assert_eq!(due[0].event_type, "dev.berth.test");
    assert_eq!((due[0].since_ms, due[0].attempts), (1_000, 0));
    assert_eq!(due[2].next_attempt_ms, 2_000);
    assert!(due.iter().all(|e| !e.dead && e.last_error.is_none()));
    assert_eq!(db.outbox_due(2_000, 1).await.unwrap(), due[..1]);
    let ids: std::collections::HashSet<i64> = due.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 3, "ids are unique");

    // A failed attempt with a retry time waits for it, counted, its error kept.
    assert!(db
        .outbox_failed(due[0].id, "HTTP 500", Some(5_000), 2_100)
        .await
        .unwrap());
    let now = db.outbox_due(4_999, 10).await.unwrap();
    assert_eq!(now, due[1..]);
    let later = db.outbox_due(5_000, 10).await.unwrap();
    assert_eq!(later.len(), 3);
    let retried = later.iter().find(|e| e.id == due[0].id).unwrap();
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.next_attempt_ms, 5_000);
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(retried.since_ms, 1_000, "the retry window is unchanged");

    // A success deletes; a second report of it finds nothing.
    assert!(db.outbox_delivered(due[1].id, 2_200).await.unwrap());
    assert!(!db.outbox_delivered(due[1].id, 2_300).await.unwrap());
    assert!(!db
        .outbox_failed(due[1].id, "late", Some(9_000), 2_300)
        .await
        .unwrap());

    // Giving up: dead, never due again.
    assert!(db
        .outbox_failed(due[2].id, "refused", None, 2_400)
        .await
        .unwrap());
    let left: Vec<i64> = db
        .outbox_due(i64::MAX, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, [due[0].id]);
}

/// Status counts pending, failing and dead deliveries per hook and keeps the last
/// outcome after its delivery is gone; redelivery revives a hook's dead deliveries with
/// a fresh retry window, and leaves other hooks alone.
pub async fn outbox_status_and_redelivery(db: &dyn AccountStore) {
    assert!(db.outbox_status().await.unwrap().is_empty());
    db.outbox_add(
        &[
            delivery("a", "e1"),
            delivery("a", "e2"),
            delivery("a", "e3"),
        ],
        1_000,
    )
    .await
    .unwrap();
    db.outbox_add(&[delivery("b", "e4")], 1_500).await.unwrap();
    let due = db.outbox_due(2_000, 10).await.unwrap();
    db.outbox_delivered(due[0].id, 1_100).await.unwrap();
    db.outbox_failed(due[1].id, "timed out", Some(9_000), 1_200)
        .await
        .unwrap();
    db.outbox_failed(due[2].id, "HTTP 410", None, 1_300)
        .await
        .unwrap();
    let status = db.outbox_status().await.unwrap();
    assert_eq!(
        status,
        [
            OutboxStatus {
                hook: "a".into(),
                pending: 1,
                failing: 1,
                dead: 1,
                oldest_pending_ms: Some(1_000),
                last_success_ms: Some(1_100),
                last_failure_ms: Some(1_300),
                last_error: Some("HTTP 410".into()),
            },
            OutboxStatus {
                hook: "b".into(),
                pending: 1,
                oldest_pending_ms: Some(1_500),
                ..Default::default()
            },
        ]
    );

    assert_eq!(db.outbox_redeliver("a", 3_000).await.unwrap(), 2);
    assert_eq!(db.outbox_redeliver("nobody", 3_000).await.unwrap(), 0);
    let due = db.outbox_due(3_000, 10).await.unwrap();
    let revived: Vec<(&str, u32, i64, bool)> = due
        .iter()
        .filter(|e| e.hook == "a")
        .map(|e| (e.event_id.as_str(), e.attempts, e.since_ms, e.dead))
        .collect();
    assert_eq!(revived, [("e2", 0, 3_000, false), ("e3", 0, 3_000, false)]);
    let b = due.iter().find(|e| e.hook == "b").unwrap();
    assert_eq!(b.since_ms, 1_500, "another hook's deliveries are untouched");

    // Once every delivery is gone, the hook's last outcome stays.
    for e in &due {
        db.outbox_delivered(e.id, 4_000).await.unwrap();
    }
    let status = db.outbox_status().await.unwrap();
    assert_eq!(status.len(), 2);
    assert_eq!(
        (status[0].pending, status[0].dead, status[0].last_success_ms),
        (0, 0, Some(4_000))
    );
    assert_eq!(status[0].last_error.as_deref(), Some("HTTP 410"));
    assert_eq!(status[0].oldest_pending_ms, None);
}

/// Hourly counters of whole days before the cutoff become one row per day; totals over
/// whole days, and everything from the cutoff day on, stay as they were.
pub async fn hourly_counters_roll_up_into_days(stats: &dyn StatsStore) {
    let (day1, day2, day3) = (24, 48, 72);
    stats
        .downloads_add(
            vec![
                (download("a", "1.0", "linux/amd64", "docker", day1 + 1), 2),
                (download("a", "1.0", "linux/amd64", "docker", day1 + 23), 3),
                (download("a", "1.0", "linux/amd64", "docker", day1), 1),
                (download("a", "2.0", "linux/amd64", "docker", day2 + 5), 4),
                (download("a", "2.0", "linux/amd64", "docker", day3 + 5), 7),
            ],
            vec![("a".into(), day1 + 2, 10), ("a".into(), day2 + 3, 20)],
        )
        .await
        .unwrap();
    let request = |hour: i64| RequestKey {
        repo: "a".into(),
        hour,
        route: "manifest_get".into(),
        class: 2,
        code: String::new(),
    };
    stats
        .requests_add(vec![(request(day1 + 4), 5), (request(day2 + 4), 6)])
        .await
        .unwrap();
    let totals = |since: i64| async move {
        (
            stats.downloads("a", since, GroupBy::Version).await.unwrap(),
            stats.bytes_served("a", since).await.unwrap(),
            stats.requests("a", since).await.unwrap(),
        )
    };
    let before = (totals(day1).await, totals(day2).await, totals(day3).await);
    // The cutoff falls inside day 3: days 1 and 2 roll up, day 3 stays hourly.
    assert_eq!(stats.stats_roll_up(day3 + 6).await.unwrap(), 2);
    assert_eq!(
        (totals(day1).await, totals(day2).await, totals(day3).await),
        before
    );
    // Within day 1 the counts now sit at its first hour.
    assert_eq!(
        stats
            .downloads("a", day1 + 1, GroupBy::Version)
            .await
            .unwrap(),
        [("2.0".to_owned(), 11)]
    );
    assert_eq!(
        stats
            .downloads("a", day3 + 5, GroupBy::Version)
            .await
            .unwrap(),
        [("2.0".to_owned(), 7)],
        "the cutoff's own day is left hourly"
    );
    assert_eq!(stats.stats_roll_up(day3 + 6).await.unwrap(), 0);
}

/// Usage counts each blob of a repository once, however many manifests list it, plus the
/// manifests' exact bytes; a blob shared with another repository counts in both; an
/// unknown repository is absent.
pub async fn repository_usage_counts_each_blob_once_per_repository(meta: Arc<dyn MetadataStore>) {
    let a = repo("team/a");
    let b = repo("team/b");
    let shared = Digest::sha256(b"shared");
    let own = Digest::sha256(b"own");
    meta.blob_link(&a, &shared, 1000).await.unwrap();
    meta.blob_link(&a, &own, 24).await.unwrap();
    meta.blob_link(&b, &shared, 1000).await.unwrap();
    let m1 = manifest("first", vec![shared.clone(), own.clone()], None);
    let m2 = manifest("second manifest", vec![shared.clone()], None);
    meta.manifest_put(&a, &m1, &tags(&["v1"]), None)
        .await
        .unwrap();
    meta.manifest_put(&a, &m2, &tags(&["v2"]), None)
        .await
        .unwrap();

    let usage = meta.repository_usage(Some(&a)).await.unwrap();
    assert_eq!(usage.len(), 1);
    let u = &usage[0];
    assert_eq!(u.name, "team/a");
    assert_eq!((u.blobs, u.blob_bytes), (2, 1024));
    assert_eq!(
        (u.manifests, u.manifest_bytes),
        (2, ("first".len() + "second manifest".len()) as u64)
    );
    assert_eq!(u.bytes(), 1024 + 20);

    let all = meta.repository_usage(None).await.unwrap();
    let names: Vec<&str> = all.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["team/a", "team/b"]);
    assert_eq!(
        all[1].bytes(),
        1000,
        "a shared blob counts in each repository"
    );
    assert!(meta
        .repository_usage(Some(&repo("team/none")))
        .await
        .unwrap()
        .is_empty());

    // Unlinking a blob lowers the usage at once.
    meta.blob_unlink(&b, &shared).await.unwrap();
    assert_eq!(meta.repository_usage(Some(&b)).await.unwrap()[0].bytes(), 0);
}

fn reservation(
    id: &str,
    repo: &RepoName,
    kind: ReservedKind,
    digest: &Digest,
    bytes: u64,
) -> QuotaReservation {
    QuotaReservation {
        id: id.into(),
        repo: repo.clone(),
        kind,
        digest: digest.clone(),
        bytes,
    }
}

/// A reservation counts against its repository's quota until its content is stored
/// there, then the content counts instead (never both, never neither); content already
/// stored, released reservations and other repositories' reservations count nothing;
/// one digest reserved twice counts once.
pub async fn quota_reservations_hold_bytes_until_their_content_is_stored(
    meta: Arc<dyn MetadataStore>,
) {
    use ReservedKind::{Blob, Manifest};
    let (r, other) = (repo("team/app"), repo("team/other"));
    let (one, two, three) = (
        Digest::sha256(b"one"),
        Digest::sha256(b"two"),
        Digest::sha256(b"three"),
    );
    let reserve = |id: &str, kind, digest: &Digest, bytes| {
        let res = reservation(id, &r, kind, digest, bytes);
        let meta = meta.clone();
        async move { meta.quota_reserve(&res, 100).await.unwrap() }
    };
    // A repository that does not exist yet stores nothing.
    assert_eq!(reserve("a", Blob, &one, 60).await, Reserved::Granted);
    assert_eq!(
        reserve("b", Blob, &two, 50).await,
        Reserved::Refused { used: 60 },
        "a live reservation counts"
    );
    assert_eq!(reserve("b", Blob, &two, 40).await, Reserved::Granted);
    // Another repository's reservations are its own.
    let elsewhere = reservation("c", &other, Blob, &three, 100);
    assert_eq!(
        meta.quota_reserve(&elsewhere, 100).await.unwrap(),
        Reserved::Granted
    );

    // The link turns reservation "a" into usage: the count stays 100.
    meta.blob_link(&r, &one, 60).await.unwrap();
    assert_eq!(
        reserve("d", Blob, &three, 1).await,
        Reserved::Refused { used: 100 }
    );
    meta.quota_release("a").await.unwrap();
    assert_eq!(
        reserve("d", Blob, &three, 1).await,
        Reserved::Refused { used: 100 },
        "releasing a reservation whose content is stored changes nothing"
    );
    // Content the repository holds adds nothing, whatever its size.
    assert_eq!(reserve("e", Blob, &one, 1000).await, Reserved::Granted);

    // A released reservation counts no more; releasing an unknown one is no error.
    meta.quota_release("b").await.unwrap();
    meta.quota_release("never").await.unwrap();
    assert_eq!(reserve("d", Blob, &three, 30).await, Reserved::Granted);
    // The same digest reserved again (two uploads of one blob) counts once, at its
    // largest: 60 + 30.
    assert_eq!(reserve("f", Blob, &three, 30).await, Reserved::Granted);
    assert_eq!(
        reserve("g", Blob, &two, 11).await,
        Reserved::Refused { used: 90 }
    );
    // Reserving again under the same id replaces the reservation.
    assert_eq!(reserve("d", Blob, &three, 5).await, Reserved::Granted);
    meta.quota_release("f").await.unwrap();
    assert_eq!(
        reserve("g", Blob, &two, 36).await,
        Reserved::Refused { used: 65 }
    );
    meta.quota_release("d").await.unwrap();

    // A manifest: reserved by its digest, stored, then counted as usage.
    let m = manifest("a manifest of 23 bytes.", vec![one.clone()], None);
    assert_eq!(m.content.len(), 23);
    assert_eq!(
        reserve("m", Manifest, &m.digest, 23).await,
        Reserved::Granted
    );
    assert_eq!(
        reserve("g", Blob, &two, 20).await,
        Reserved::Refused { used: 83 }
    );
    meta.manifest_put(&r, &m, &tags(&["v1"]), None)
        .await
        .unwrap();
    assert_eq!(
        reserve("g", Blob, &two, 18).await,
        Reserved::Refused { used: 83 },
        "the stored manifest counts once"
    );
    assert_eq!(reserve("g", Blob, &two, 17).await, Reserved::Granted);
    // A manifest already stored adds nothing; a blob of the same digest would.
    assert_eq!(
        reserve("h", Manifest, &m.digest, 50).await,
        Reserved::Granted
    );
    assert_eq!(
        reserve("h", Blob, &m.digest, 50).await,
        Reserved::Refused { used: 100 }
    );
}

/// Reservations racing for one repository's quota, however many at once, grant no more
/// than the limit holds.
pub async fn concurrent_quota_reservations_never_exceed_the_limit(meta: Arc<dyn MetadataStore>) {
    let r = repo("team/app");
    meta.blob_link(&r, &Digest::sha256(b"base"), 5)
        .await
        .unwrap();
    let racers = (0..16).map(|i| {
        let res = reservation(
            &format!("upload-{i}"),
            &r,
            ReservedKind::Blob,
            &Digest::sha256(format!("layer {i}").as_bytes()),
            10,
        );
        let meta = meta.clone();
        tokio::spawn(async move { meta.quota_reserve(&res, 45).await.unwrap() })
    });
    let mut granted = 0;
    for racer in racers.collect::<Vec<_>>() {
        match racer.await.unwrap() {
            Reserved::Granted => granted += 1,
            Reserved::Refused { used } => assert!(used + 10 > 45, "refused at {used}"),
        }
    }
    assert_eq!(granted, 4, "5 bytes stored + 4 x 10 reserved fit in 45");
}

/// Pulls keep the latest time per (repository, digest): a later time moves it, an earlier
/// one does not; repositories are separate.
pub async fn pulls_keep_the_latest_time(stats: &dyn StatsStore) {
    let one = Digest::sha256(b"one");
    let two = Digest::sha256(b"two");
    assert!(stats.last_pulls("a").await.unwrap().is_empty());
    stats
        .pulls_add(vec![
            ("a".into(), one.clone(), 100),
            ("a".into(), two.clone(), 50),
            ("b".into(), one.clone(), 7),
        ])
        .await
        .unwrap();
    stats
        .pulls_add(vec![
            ("a".into(), one.clone(), 300),
            ("a".into(), two.clone(), 10),
        ])
        .await
        .unwrap();
    let mut want = vec![(one.clone(), 300), (two.clone(), 50)];
    want.sort();
    assert_eq!(stats.last_pulls("a").await.unwrap(), want);
    assert_eq!(stats.last_pulls("b").await.unwrap(), vec![(one, 7)]);
    stats.pulls_add(Vec::new()).await.unwrap();
}

/// A far-future cutoff: every row counts as old enough to collect.
fn later() -> i64 {
    berth_oci::time::now() + 3600
}

/// Links no manifest references are the collector's candidates; a link made after the
/// cutoff is not one; the unlink re-checks both conditions in its transaction.
/// A mirrored manifest is stored before its blobs and children are fetched, with its
/// references recorded: a blob linked later is then referenced, so the collector keeps it
/// and an unlink is refused.
pub async fn mirrored_manifests_record_references_without_requiring_them(
    meta: Arc<dyn MetadataStore>,
) {
    let r = repo("docker.io/library/alpine");
    let layer = Digest::sha256(b"mirrored layer");
    let child = Digest::sha256(b"mirrored child");
    let mut m = manifest("mirrored", vec![layer.clone()], None);
    m.children = vec![child.clone()];
    m.mirrored = true;
    meta.manifest_put(&r, &m, &tags(&["3.20"]), None)
        .await
        .unwrap();
    let got = meta
        .manifest_by_tag(&r, &Tag::parse("3.20").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, m.digest);
    meta.blob_link(&r, &layer, 14).await.unwrap();
    assert!(meta
        .gc_unreferenced_links(None, later(), 100)
        .await
        .unwrap()
        .iter()
        .all(|l| l.digest != layer));
    assert!(matches!(
        meta.blob_unlink(&r, &layer).await,
        Err(MetaError::BlobInUse(_))
    ));
}

pub async fn gc_lists_and_unlinks_only_unreferenced_links(meta: Arc<dyn MetadataStore>) {
    let (a, b) = (repo("a"), repo("b"));
    let used = Digest::sha256(b"used");
    let loose = Digest::sha256(b"loose");
    meta.blob_link(&a, &used, 4).await.unwrap();
    meta.blob_link(&a, &loose, 5).await.unwrap();
    meta.blob_link(&b, &used, 4).await.unwrap();
    meta.manifest_put(
        &a,
        &manifest("m", vec![used.clone()], None),
        &tags(&["v1"]),
        None,
    )
    .await
    .unwrap();
    // Too young for a cutoff in the past.
    let past = berth_oci::time::now() - 3600;
    assert!(meta
        .gc_unreferenced_links(None, past, 100)
        .await
        .unwrap()
        .is_empty());
    let found = meta
        .gc_unreferenced_links(None, later(), 100)
        .await
        .unwrap();
    let names: Vec<(String, Digest)> = found
        .iter()
        .map(|l| (l.repo.clone(), l.digest.clone()))
        .collect();
    // `b` links `used` but no manifest of `b` references it.
    assert_eq!(
        names,
        vec![
            ("a".to_owned(), loose.clone()),
            ("b".to_owned(), used.clone())
        ]
    );
    assert_eq!(found[0].size, 5);
    // Paging resumes after the cursor.
    let rest = meta
        .gc_unreferenced_links(Some(&found[0].cursor()), later(), 1)
        .await
        .unwrap();
    assert_eq!(rest, vec![found[1].clone()]);
    // A manifest pushed after the listing protects its blob: the unlink skips it.
    meta.manifest_put(&b, &manifest("mb", vec![used.clone()], None), &[], None)
        .await
        .unwrap();
    assert!(meta.gc_unlink(&found, past).await.unwrap().is_empty());
    let removed = meta.gc_unlink(&found, later()).await.unwrap();
    assert_eq!(removed, vec![found[0].clone()]);
    assert_eq!(meta.blob_size(&a, &loose).await.unwrap(), None);
    assert_eq!(meta.blob_size(&b, &used).await.unwrap(), Some(4));
    assert_eq!(
        meta.gc_link_counts(&[used.clone(), loose.clone()])
            .await
            .unwrap(),
        vec![2, 0]
    );
}

/// Only digests nothing links or claims get a tombstone, which then blocks claims until
/// the collector says the bytes are gone; a fresh tombstone of another deleter is left.
pub async fn gc_tombstones_only_unlinked_unclaimed_digests(meta: Arc<dyn MetadataStore>) {
    let a = repo("a");
    let linked = Digest::sha256(b"linked");
    let claimed = Digest::sha256(b"claimed");
    let orphan = Digest::sha256(b"orphan");
    let deleting = Digest::sha256(b"deleting");
    meta.blob_link(&a, &linked, 1).await.unwrap();
    let claim = meta.blob_claim(&claimed).await.unwrap();
    meta.blob_link(&a, &deleting, 1).await.unwrap();
    assert_eq!(
        meta.blob_unlink(&a, &deleting).await.unwrap(),
        Unlinked::Removed { orphaned: true }
    );
    let all = [
        linked.clone(),
        claimed.clone(),
        orphan.clone(),
        deleting.clone(),
    ];
    assert_eq!(meta.gc_tombstone(&all).await.unwrap(), vec![orphan.clone()]);
    assert!(matches!(
        meta.blob_claim(&orphan).await,
        Err(MetaError::BlobBusy(_))
    ));
    assert!(matches!(
        meta.blob_link(&a, &orphan, 1).await,
        Err(MetaError::BlobBusy(_))
    ));
    meta.gc_deletions_done(&[orphan.clone(), deleting.clone()])
        .await
        .unwrap();
    let again = meta.blob_claim(&orphan).await.unwrap();
    meta.blob_claim_release(&again).await.unwrap();
    meta.blob_claim_release(&claim).await.unwrap();
    assert_eq!(
        meta.gc_tombstone(std::slice::from_ref(&claimed))
            .await
            .unwrap(),
        vec![claimed]
    );
}

/// The manifest graph lists tags (hidden ones too), children and subjects; a
/// collector's manifest deletion skips a tagged manifest, a child of an index and a
/// referrer whose subject exists, and frees the references of those it deletes.
pub async fn gc_manifest_graph_and_conditional_deletes(meta: Arc<dyn MetadataStore>) {
    let r = repo("r");
    let layer = Digest::sha256(b"layer");
    meta.blob_link(&r, &layer, 5).await.unwrap();
    let child = manifest("child", vec![layer.clone()], None);
    meta.manifest_put(&r, &child, &[], None).await.unwrap();
    let mut index = manifest("index", vec![], None);
    index.children = vec![child.digest.clone()];
    meta.manifest_put(&r, &index, &[], None).await.unwrap();
    let sig = manifest("sig", vec![], Some(index.digest.clone()));
    meta.manifest_put(&r, &sig, &[], None).await.unwrap();
    let tagged = manifest("tagged", vec![], None);
    let legacy = format!("sha256-{}.sig", tagged.digest.hex());
    meta.manifest_put(&r, &tagged, &tags(&["v1", &legacy]), None)
        .await
        .unwrap();
    let graph = meta.gc_manifests(&r).await.unwrap();
    assert_eq!(graph.len(), 4);
    let node = |d: &Digest| graph.iter().find(|n| &n.digest == d).unwrap().clone();
    assert_eq!(node(&index.digest).children, vec![child.digest.clone()]);
    assert_eq!(node(&sig.digest).subject, Some(index.digest.clone()));
    let mut want = vec![legacy.clone(), "v1".to_owned()];
    want.sort();
    assert_eq!(node(&tagged.digest).tags, want);
    assert!(meta
        .gc_manifests(&repo("nothing"))
        .await
        .unwrap()
        .is_empty());

    // Children first and referrers first are refused; roots go, then what they held.
    let all = vec![
        child.digest.clone(),
        sig.digest.clone(),
        tagged.digest.clone(),
        index.digest.clone(),
    ];
    let past = berth_oci::time::now() - 3600;
    assert!(meta
        .gc_delete_manifests(&r, &all, past)
        .await
        .unwrap()
        .is_empty());
    let first = meta.gc_delete_manifests(&r, &all, later()).await.unwrap();
    assert_eq!(first, vec![index.digest.clone()]);
    let second = meta.gc_delete_manifests(&r, &all, later()).await.unwrap();
    assert_eq!(second, vec![child.digest.clone(), sig.digest.clone()]);
    assert!(meta
        .manifest_by_digest(&r, &tagged.digest)
        .await
        .unwrap()
        .is_some());
    // The layer's reference went with the child: its link is now unreferenced.
    let holders = meta.gc_blob_holders(&r, &layer).await.unwrap().unwrap();
    assert!(holders.manifests.is_empty());
    assert_eq!(holders.size, 5);
    assert_eq!(
        meta.gc_blob_holders(&r, &tagged.digest).await.unwrap(),
        None
    );
}

/// What a backend's `fresh` function returns: `(keep, store)`, or `None` when the
/// backend is not available and its tests are deliberately skipped (the backend's helper
/// decides, and says so: see `postgres::testing`).
pub trait Fresh {
    type Keep;
    type Store;
    fn into_option(self) -> Option<(Self::Keep, Self::Store)>;
}

impl<K, S> Fresh for (K, S) {
    type Keep = K;
    type Store = S;
    fn into_option(self) -> Option<(K, S)> {
        Some(self)
    }
}

impl<K, S> Fresh for Option<(K, S)> {
    type Keep = K;
    type Store = S;
    fn into_option(self) -> Option<(K, S)> {
        self
    }
}

/// An image's base is the tagged image whose layers are its longest proper layer prefix;
/// once the base tag moves, the image is stale (with its tags and the base's old and new
/// digests); declared bases take precedence; images on no base, and untagged ones, are
/// never listed.
pub async fn stale_images_follow_base_tags(meta: Arc<dyn MetadataStore>) {
    use crate::bases::{DeclaredBase, ImageLayers};
    let l = |n: &str| Digest::sha256(n.as_bytes());
    let layered = |digest: &Digest, layers: &[&str], declared: Option<DeclaredBase>| ImageLayers {
        digest: digest.clone(),
        layers: layers.iter().map(|n| l(n)).collect(),
        declared,
    };
    let (base, app, other) = (repo("base"), repo("app"), repo("other"));
    let base12 = manifest("base 12", vec![], None);
    meta.manifest_put(&base, &base12, &tags(&["12"]), None)
        .await
        .unwrap();
    let root = meta
        .image_layers_put(&base, &layered(&base12.digest, &["a", "b"], None))
        .await
        .unwrap();
    assert_eq!(root, None, "no tagged image is a prefix of the base");
    // A one-layer image below the base, untagged: never a base.
    let untagged = manifest("untagged", vec![], None);
    meta.manifest_put(&base, &untagged, &[], None)
        .await
        .unwrap();
    meta.image_layers_put(&base, &layered(&untagged.digest, &["a"], None))
        .await
        .unwrap();
    let app1 = manifest("app 1", vec![], None);
    meta.manifest_put(&app, &app1, &tags(&["1", "latest"]), None)
        .await
        .unwrap();
    let found = meta
        .image_layers_put(&app, &layered(&app1.digest, &["a", "b", "c"], None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.repo.as_str(), found.tag.as_str()), ("base", "12"));
    assert_eq!(
        (found.digest.clone(), found.declared),
        (base12.digest.clone(), false)
    );
    // An image on other layers, and one declaring a base that does not exist here.
    let lone = manifest("lone", vec![], None);
    meta.manifest_put(&other, &lone, &tags(&["1"]), None)
        .await
        .unwrap();
    assert_eq!(
        meta.image_layers_put(&other, &layered(&lone.digest, &["x", "y"], None))
            .await
            .unwrap(),
        None
    );
    // Declared: base:12 by annotation, on layers that share nothing with it.
    let decl = manifest("declared", vec![], None);
    meta.manifest_put(&other, &decl, &tags(&["2"]), None)
        .await
        .unwrap();
    let declared = DeclaredBase::parse(Some("localhost:5000/base:12"), None);
    let got = meta
        .image_layers_put(&other, &layered(&decl.digest, &["z"], declared))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.digest.clone(), got.declared),
        (base12.digest.clone(), true)
    );
    assert!(meta.stale_images().await.unwrap().is_empty());

    // base:12 is rebuilt on new layers.
    let rebuilt = manifest("base 12 rebuilt", vec![], None);
    meta.manifest_put(&base, &rebuilt, &tags(&["12"]), None)
        .await
        .unwrap();
    meta.image_layers_put(&base, &layered(&rebuilt.digest, &["a2", "b2"], None))
        .await
        .unwrap();
    // Pushing app:1 again (another tag) keeps the base it was built on.
    let again = meta
        .image_layers_put(&app, &layered(&app1.digest, &["a", "b", "c"], None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.digest, base12.digest);
    let stale = meta.stale_images().await.unwrap();
    let listed: Vec<(&str, &Digest)> = stale.iter().map(|s| (s.repo.as_str(), &s.digest)).collect();
    assert_eq!(listed, [("app", &app1.digest), ("other", &decl.digest)]);
    let s = &stale[0];
    assert_eq!(s.tags, ["1", "latest"]);
    assert_eq!((s.base.repo.as_str(), s.base.tag.as_str()), ("base", "12"));
    assert_eq!(
        (&s.base.digest, &s.base_now),
        (&base12.digest, &rebuilt.digest)
    );
    assert!(s.base_moved_at > 0);
    assert!(stale[1].base.declared);

    // An image built on the new base is not stale; an untagged stale image is not listed.
    let app2 = manifest("app 2", vec![], None);
    meta.manifest_put(&app, &app2, &tags(&["2"]), None)
        .await
        .unwrap();
    let on_new = meta
        .image_layers_put(&app, &layered(&app2.digest, &["a2", "b2", "c"], None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(on_new.digest, rebuilt.digest);
    meta.tag_delete(&app, &Tag::parse("1").unwrap(), None)
        .await
        .unwrap();
    meta.tag_delete(&app, &Tag::parse("latest").unwrap(), None)
        .await
        .unwrap();
    let stale = meta.stale_images().await.unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].digest, decl.digest);
}

fn scan_outcome(packages: &[&str], critical: u64, db: &str, at: i64) -> ScanOutcome {
    ScanOutcome {
        state: ScanState::Done,
        packages: packages.iter().map(|p| (*p).to_owned()).collect(),
        counts: SeverityCounts {
            critical,
            high: 2,
            medium: 3,
            low: 4,
            unknown: 5,
        },
        db: Some(DbStamp {
            version: db.into(),
            imported: "2026-01-02T03:04:05Z".into(),
        }),
        at,
        error: None,
    }
}

/// Every pending scan, claimed or not, oldest first, at most `limit`: a claim with no
/// lease takes them all.
async fn pending<S: ScanStore + ?Sized>(scans: &S, limit: usize) -> Vec<(String, Digest)> {
    scans.scan_claim(limit, 0, 0).await.unwrap()
}

/// A claimed scan is not handed out again until its lease runs out, concurrent claims
/// (two replicas) take disjoint rows, and a recorded scan is never claimed again.
pub async fn scans_are_claimed_once_until_the_lease_runs_out<S: ScanStore + ?Sized>(scans: &S) {
    let d: Vec<Digest> = (0..12u8).map(|i| Digest::sha256(&[i])).collect();
    for (i, digest) in d.iter().enumerate() {
        assert!(scans
            .scan_enqueue("team/app", digest, 100 + i as i64)
            .await
            .unwrap());
    }
    let repo = |ds: &[Digest]| -> Vec<(String, Digest)> {
        ds.iter()
            .map(|x| ("team/app".to_owned(), x.clone()))
            .collect()
    };
    assert_eq!(
        scans.scan_claim(2, 1000, 600).await.unwrap(),
        repo(&d[0..2]),
        "oldest first"
    );
    // Two scanners claiming at once take different rows.
    let (x, y) = tokio::join!(
        scans.scan_claim(5, 1000, 600),
        scans.scan_claim(5, 1000, 600)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.len() + y.len(), 10);
    let mut both: Vec<_> = x.iter().chain(&y).cloned().collect();
    both.sort();
    let mut want = repo(&d[2..]);
    want.sort();
    assert_eq!(both, want, "no row taken twice");
    // Everything is claimed: nothing more until the lease runs out.
    assert!(scans.scan_claim(20, 1599, 600).await.unwrap().is_empty());
    let pending = scans.scan_states().await.unwrap();
    assert_eq!(
        pending
            .iter()
            .find(|(s, _)| *s == ScanState::Pending)
            .map(|p| p.1),
        Some(12),
        "still pending"
    );
    let done = scan_outcome(&[], 0, "v1", 1200);
    assert!(scans.scan_record("team/app", &d[0], &done).await.unwrap());
    // Lease over: the rows of a scanner that stopped are taken again, the recorded one not.
    assert_eq!(
        scans.scan_claim(20, 1600, 600).await.unwrap(),
        repo(&d[1..]),
        "expired claims, oldest first"
    );
}

/// A queued scan is pending until recorded, queuing it again changes nothing, and the
/// recorded outcome reads back whole; a deleted manifest's scan is forgotten and an
/// outcome for it is not written.
pub async fn scans_queue_and_record<S: ScanStore + ?Sized>(scans: &S) {
    let a = Digest::sha256(b"image a");
    let b = Digest::sha256(b"image b");
    assert!(scans.scan_enqueue("team/app", &a, 100).await.unwrap());
    assert!(scans.scan_enqueue("team/app", &b, 101).await.unwrap());
    assert!(scans.scan_enqueue("other", &a, 102).await.unwrap());
    assert!(
        !scans.scan_enqueue("team/app", &a, 200).await.unwrap(),
        "queued once"
    );
    assert_eq!(
        pending(scans, 10).await,
        vec![
            ("team/app".to_owned(), a.clone()),
            ("team/app".to_owned(), b.clone()),
            ("other".to_owned(), a.clone()),
        ],
        "oldest first"
    );
    assert_eq!(pending(scans, 1).await.len(), 1);

    let purls = [
        "pkg:deb/debian/openssl@3.0.9-1?arch=amd64&distro=debian-12",
        "pkg:npm/left-pad@1.3.0",
    ];
    let done = scan_outcome(&purls, 1, "v1", 300);
    assert!(scans.scan_record("team/app", &a, &done).await.unwrap());
    let failed = ScanOutcome {
        state: ScanState::Failed,
        packages: vec![],
        counts: SeverityCounts::default(),
        db: None,
        at: 301,
        error: Some("layer unreadable".into()),
    };
    assert!(scans.scan_record("team/app", &b, &failed).await.unwrap());
    assert_eq!(
        pending(scans, 10).await,
        vec![("other".to_owned(), a.clone())]
    );

    let got = scans
        .scan_get("team/app", &[b.clone(), Digest::sha256(b"none"), a.clone()])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].digest.clone(), got[1].digest.clone()),
        (b.clone(), a.clone()),
        "in the order asked"
    );
    let r = &got[1];
    assert_eq!(
        (r.repo.as_str(), r.state, r.queued_at),
        ("team/app", ScanState::Done, 100)
    );
    assert_eq!(r.packages, purls);
    assert_eq!(r.counts, done.counts);
    assert_eq!(r.counts.total(), 15);
    assert_eq!(r.db, done.db);
    assert_eq!(
        (r.scanned_at, r.matched_at, r.error.as_deref()),
        (Some(300), Some(300), None)
    );
    let f = &got[0];
    assert_eq!(
        (f.state, f.error.as_deref(), f.db.as_ref(), f.matched_at),
        (ScanState::Failed, Some("layer unreadable"), None, None)
    );
    assert!(scans.scan_get("team/app", &[]).await.unwrap().is_empty());

    let mut states = scans.scan_states().await.unwrap();
    states.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        states,
        vec![
            (ScanState::Done, 1),
            (ScanState::Failed, 1),
            (ScanState::Pending, 1)
        ]
    );

    // A manifest deleted before its scan ends: the outcome finds no row and is dropped.
    assert!(scans.scan_forget("other", &a).await.unwrap());
    assert!(!scans.scan_forget("other", &a).await.unwrap());
    assert!(!scans.scan_record("other", &a, &done).await.unwrap());
    assert!(scans
        .scan_get("other", std::slice::from_ref(&a))
        .await
        .unwrap()
        .is_empty());
    assert!(pending(scans, 10).await.is_empty());
}

/// The collector's deletion of a manifest deletes its scan in the same transaction, a
/// queued one as well as a done one; the scans of manifests it keeps, and of the same
/// digest in another repository, stay.
pub async fn collected_manifests_lose_their_scans<S: MetadataStore + ScanStore>(store: &S) {
    let (r, other) = (repo("team/app"), repo("team/other"));
    let kept = manifest("kept", vec![], None);
    let scanned = manifest("untagged and scanned", vec![], None);
    let queued = manifest("untagged and queued", vec![], None);
    store
        .manifest_put(&r, &kept, &tags(&["v1"]), None)
        .await
        .unwrap();
    for m in [&scanned, &queued] {
        store.manifest_put(&r, m, &[], None).await.unwrap();
    }
    store
        .manifest_put(&other, &queued, &[], None)
        .await
        .unwrap();
    for (repo, m) in [
        (&r, &kept),
        (&r, &scanned),
        (&r, &queued),
        (&other, &queued),
    ] {
        assert!(store
            .scan_enqueue(repo.as_str(), &m.digest, 100)
            .await
            .unwrap());
    }
    let done = scan_outcome(&["pkg:npm/left-pad@1.3.0"], 1, "v1", 200);
    for m in [&kept, &scanned] {
        assert!(store
            .scan_record(r.as_str(), &m.digest, &done)
            .await
            .unwrap());
    }

    let all = [
        kept.digest.clone(),
        scanned.digest.clone(),
        queued.digest.clone(),
    ];
    let mut deleted = store.gc_delete_manifests(&r, &all, later()).await.unwrap();
    deleted.sort();
    let mut want = vec![scanned.digest.clone(), queued.digest.clone()];
    want.sort();
    assert_eq!(deleted, want, "the tagged manifest is kept");

    let left = store.scan_get(r.as_str(), &all).await.unwrap();
    let left: Vec<&Digest> = left.iter().map(|s| &s.digest).collect();
    assert_eq!(
        left,
        [&kept.digest],
        "only the kept manifest keeps its scan"
    );
    assert_eq!(
        pending(store, 10).await,
        vec![(other.to_string(), queued.digest.clone())],
        "the queued scan of the deleted manifest is gone; another repository's stays"
    );
}

/// A re-match walks the done scans page by page in (repository, digest) order and
/// replaces their counts and database, never their packages; scans not done are left
/// alone.
pub async fn scans_rematch_in_pages<S: ScanStore + ?Sized>(scans: &S) {
    let mut done = Vec::new();
    for (i, repo) in ["b", "a", "a/x", "c"].iter().enumerate() {
        let d = Digest::sha256(format!("image {i}").as_bytes());
        scans.scan_enqueue(repo, &d, 10).await.unwrap();
        let packages = [format!("pkg:npm/p{i}@1.0.0")];
        let refs: Vec<&str> = packages.iter().map(String::as_str).collect();
        scans
            .scan_record(repo, &d, &scan_outcome(&refs, 0, "v1", 20))
            .await
            .unwrap();
        done.push(((*repo).to_owned(), d));
    }
    let pending = Digest::sha256(b"pending");
    scans.scan_enqueue("a", &pending, 30).await.unwrap();
    done.sort();

    let mut walked = Vec::new();
    let mut after: Option<(String, Digest)> = None;
    loop {
        let page = scans
            .scan_done_page(after.as_ref().map(|(r, d)| (r.as_str(), d)), 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        for r in &page {
            assert_eq!(r.state, ScanState::Done);
            assert_eq!(r.packages.len(), 1);
            walked.push((r.repo.clone(), r.digest.clone()));
        }
        let last = page.last().unwrap();
        after = Some((last.repo.clone(), last.digest.clone()));
    }
    assert_eq!(walked, done, "every done scan once, in order");

    let new_db = DbStamp {
        version: "v2".into(),
        imported: "2026-02-03T04:05:06Z".into(),
    };
    let counts = SeverityCounts {
        critical: 7,
        ..SeverityCounts::default()
    };
    let (repo, digest) = &done[0];
    assert!(scans
        .scan_rematched(repo, digest, &counts, &new_db, 40)
        .await
        .unwrap());
    let r = &scans
        .scan_get(repo, std::slice::from_ref(digest))
        .await
        .unwrap()[0];
    assert_eq!(
        (r.counts, r.db.as_ref(), r.matched_at, r.scanned_at),
        (counts, Some(&new_db), Some(40), Some(20))
    );
    assert_eq!(r.packages.len(), 1, "packages kept");
    assert!(
        !scans
            .scan_rematched("a", &pending, &counts, &new_db, 40)
            .await
            .unwrap(),
        "a pending scan is not re-matched"
    );
    let p = &scans
        .scan_get("a", std::slice::from_ref(&pending))
        .await
        .unwrap()[0];
    assert_eq!(
        (p.state, p.counts, p.db.as_ref()),
        (ScanState::Pending, SeverityCounts::default(), None)
    );
}

/// Runs every [`MetadataStore`] function of the suite, one `#[tokio::test]` each.
/// `$fresh` is an async function returning `(keep, Arc<dyn MetadataStore>)`, a fresh
/// empty store and whatever must live as long as it (a temporary directory...), or an
/// `Option` of that (see [`Fresh`]).
#[macro_export]
macro_rules! metadata_store_suite {
    ($fresh:path) => {
        $crate::metadata_store_suite!(@each $fresh;
            manifest_put_is_atomic,
            guard_refusals_refuse_the_whole_request,
            unlink_refuses_a_blob_in_use,
            delete_refuses_a_child_of_an_index,
            tags_paginate,
            repositories_paginate,
            upload_sessions,
            referrers_filter_by_artifact_type,
            legacy_artifact_tags_are_referrers,
            artifact_tags_are_hidden_from_the_default_list,
            claims_block_orphaning_and_tombstones_block_claims,
            every_live_claim_protects,
            released_claims_neither_protect_nor_link,
            a_claimed_link_ends_its_upload_session,
            mount_links_only_what_the_source_links,
            mount_and_unlink_race_consistently,
            claim_and_unlink_race_consistently,
            gated_tags_wait_for_a_signature,
            the_collector_keeps_a_manifest_waiting_for_a_signature,
            a_recorded_signature_lets_gated_tags_through,
            pending_tags_follow_the_newest_push,
            a_refused_reveal_drops_only_that_tag,
            gate_and_signature_race_consistently,
            index_parents_list_indexes_of_a_child,
            gc_lists_and_unlinks_only_unreferenced_links,
            mirrored_manifests_record_references_without_requiring_them,
            gc_tombstones_only_unlinked_unclaimed_digests,
            gc_manifest_graph_and_conditional_deletes,
            repository_usage_counts_each_blob_once_per_repository,
            quota_reservations_hold_bytes_until_their_content_is_stored,
            concurrent_quota_reservations_never_exceed_the_limit,
            stale_images_follow_base_tags,
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some((_keep, store)) = $crate::testsuite::Fresh::into_option($fresh().await) else {
                    return;
                };
                $crate::testsuite::$name(store).await;
            }
        )*
    };
}

/// Runs every [`AccountStore`] function of the suite; `$fresh` returns
/// `(keep, store)` where `&store` derefs to a `dyn AccountStore` implementor.
#[macro_export]
macro_rules! account_store_suite {
    ($fresh:path) => {
        $crate::account_store_suite!(@each $fresh;
            accounts_grants_public_audit,
            outbox_delivers_retries_and_gives_up,
            outbox_status_and_redelivery,
            replication_queue_coalesces_and_resumes,
            replication_failures_back_off_and_die,
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((_keep, store)) = $crate::testsuite::Fresh::into_option($fresh().await) else {
                    return;
                };
                $crate::testsuite::$name(&store).await;
            }
        )*
    };
}

/// Runs every [`StatsStore`] function of the suite; `$fresh` returns `(keep, store)`.
#[macro_export]
macro_rules! stats_store_suite {
    ($fresh:path) => {
        $crate::stats_store_suite!(@each $fresh;
            downloads_add_and_query,
            request_counters,
            hourly_counters_roll_up_into_days,
            pulls_keep_the_latest_time,
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((_keep, store)) = $crate::testsuite::Fresh::into_option($fresh().await) else {
                    return;
                };
                $crate::testsuite::$name(&store).await;
            }
        )*
    };
}

/// Runs every [`ScanStore`] function of the suite; `$fresh` returns `(keep, store)`.
#[macro_export]
macro_rules! scan_store_suite {
    ($fresh:path) => {
        $crate::scan_store_suite!(@each $fresh;
            scans_queue_and_record,
            scans_are_claimed_once_until_the_lease_runs_out,
            scans_rematch_in_pages,
            collected_manifests_lose_their_scans,
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((_keep, store)) = $crate::testsuite::Fresh::into_option($fresh().await) else {
                    return;
                };
                $crate::testsuite::$name(&store).await;
            }
        )*
    };
}
