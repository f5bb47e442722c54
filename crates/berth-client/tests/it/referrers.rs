//! Referrers: listing and filtering against Berth's referrers API, pagination and
//! client-side filtering against a fake registry that pages and ignores the filter, and
//! the referrers tag schema (fallback listing, index upkeep on push and delete, a
//! concurrent writer) against a fake registry without the API.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use berth_client::image::Manifest;
use berth_client::referrers::referrers_tag;
use berth_client::{open_source, Location, Registry};
use berth_oci::{media_types as mt, Descriptor, Digest, Reference, RepoName};

use crate::fixtures::*;

const SIG: &str = "application/vnd.example.signature";
const SBOM: &str = "application/spdx+json";
const CREATED: &str = "org.opencontainers.image.created";

/// The empty config `{}` artifacts use.
fn empty_config() -> (Descriptor, Bytes) {
    let data = Bytes::from_static(b"{}");
    (
        Descriptor {
            media_type: mt::OCI_EMPTY.into(),
            digest: Digest::sha256(&data),
            size: 2,
            urls: vec![],
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        },
        data,
    )
}

/// An artifact manifest of `artifact_type` whose subject is `subject`, with one layer of
/// `payload`; returns the manifest and its layer.
fn referrer(
    subject: &Manifest,
    artifact_type: &str,
    payload: &[u8],
    created: &str,
) -> (Manifest, (Descriptor, Bytes)) {
    let layer = Bytes::copy_from_slice(payload);
    let layer_desc = Descriptor {
        media_type: "application/octet-stream".into(),
        digest: Digest::sha256(&layer),
        size: layer.len() as u64,
        urls: vec![],
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    };
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty_config().0,
        "layers": [layer_desc],
        "subject": subject.descriptor(),
        "annotations": {CREATED: created},
    });
    let m = Manifest::from_bytes(
        Bytes::from(serde_json::to_vec_pretty(&body).unwrap()),
        Some(mt::OCI_MANIFEST),
    )
    .unwrap();
    (m, (layer_desc, layer))
}

/// Pushes a referrer's blobs and its manifest by digest.
async fn push_referrer(reg: &Registry, repo: &RepoName, m: &Manifest, layer: &(Descriptor, Bytes)) {
    let (cd, cb) = empty_config();
    reg.put_blob_bytes(repo, &cd, cb).await.unwrap();
    reg.put_blob_bytes(repo, &layer.0, layer.1.clone())
        .await
        .unwrap();
    reg.put_manifest(repo, &Reference::Digest(m.digest.clone()), m)
        .await
        .unwrap();
}

fn digests(descs: &[Descriptor]) -> Vec<Digest> {
    let mut v: Vec<Digest> = descs.iter().map(|d| d.digest.clone()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<Digest>) -> Vec<Digest> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn berth_lists_and_filters_referrers() {
    let berth = TestBerth::start().await;
    let c = clients();
    let reg = c.registry(&berth.host()).unwrap();
    let repo = RepoName::parse("app").unwrap();
    let img = image(50, 1, 1000, "amd64", false);
    push_image(&reg, "app", &img, Some("1.0")).await;
    let (sig, sig_layer) = referrer(&img.manifest, SIG, b"signature", "2024-05-06T07:08:09Z");
    let (sbom, sbom_layer) = referrer(&img.manifest, SBOM, b"{\"spdx\":1}", "2024-05-07T00:00:00Z");
    push_referrer(&reg, &repo, &sig, &sig_layer).await;
    push_referrer(&reg, &repo, &sbom, &sbom_layer).await;

    // A HEAD describes the manifest fully: digest, media type and its real size.
    let head = reg
        .head_manifest(&repo, &Reference::parse("1.0").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head, img.manifest.descriptor());

    // Berth processed the subjects (OCI-Subject), so no tag schema index was written.
    let tag = referrers_tag(&img.manifest.digest).unwrap();
    assert!(reg
        .head_manifest(&repo, &Reference::Tag(tag))
        .await
        .unwrap()
        .is_none());

    let all = reg
        .referrers(&repo, &img.manifest.digest, None)
        .await
        .unwrap();
    assert_eq!(
        digests(&all),
        sorted(vec![sig.digest.clone(), sbom.digest.clone()])
    );
    let s = all.iter().find(|d| d.digest == sig.digest).unwrap();
    assert_eq!(s.artifact_type.as_deref(), Some(SIG));
    assert_eq!(s.size, sig.bytes.len() as u64);
    assert_eq!(s.annotations[CREATED], "2024-05-06T07:08:09Z");

    let only_sbom = reg
        .referrers(&repo, &img.manifest.digest, Some(SBOM))
        .await
        .unwrap();
    assert_eq!(digests(&only_sbom), vec![sbom.digest.clone()]);
    assert!(reg
        .referrers(&repo, &img.manifest.digest, Some("application/none"))
        .await
        .unwrap()
        .is_empty());
    // A manifest nobody refers to has no referrers.
    assert!(reg
        .referrers(&repo, &sig.digest, None)
        .await
        .unwrap()
        .is_empty());

    // inspect shows them.
    let src = open_source(
        &c,
        &Location::parse(&format!("{}/app:1.0", berth.host())).unwrap(),
    )
    .await
    .unwrap();
    let info = berth_client::inspect::inspect(src.as_ref(), None)
        .await
        .unwrap();
    let refs = info.referrers.as_ref().unwrap();
    assert_eq!(refs.len(), 2);
    assert!(info.to_text().contains("2024-05-07T00:00:00Z"));
    // Inspecting the signature shows its artifact type and subject.
    let src = open_source(
        &c,
        &Location::parse(&format!("{}/app@{}", berth.host(), sig.digest)).unwrap(),
    )
    .await
    .unwrap();
    let info = berth_client::inspect::inspect(src.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(info.artifact_type.as_deref(), Some(SIG));
    assert_eq!(info.subject.as_ref(), Some(&img.manifest.digest));
    assert_eq!(info.annotations[CREATED], "2024-05-06T07:08:09Z");

    reg.delete_referrer(&repo, &sig, false).await.unwrap();
    let left = reg
        .referrers(&repo, &img.manifest.digest, None)
        .await
        .unwrap();
    assert_eq!(digests(&left), vec![sbom.digest.clone()]);
}

/// Manifests by repository and reference (tags and digests): (media type, bytes).
type ManifestStore = HashMap<(String, String), (String, Bytes)>;

/// A fake registry keeping manifests in memory. With `api`, it serves the referrers API
/// one descriptor per page and never applies the filter; without, it answers 404 there
/// as registries without the API do. It never sends `OCI-Subject`.
#[derive(Clone, Default)]
struct Fake {
    api: bool,
    manifests: Arc<Mutex<ManifestStore>>,
    /// When set, the next conditional `PUT` finds that "another client" added an entry
    /// to the index and answers 412.
    race_next: Arc<AtomicBool>,
    conditional_puts: Arc<AtomicUsize>,
    referrer_requests: Arc<AtomicUsize>,
}

/// An index entry the fake's "other client" adds.
fn other_entry() -> Descriptor {
    Descriptor {
        media_type: mt::OCI_MANIFEST.into(),
        digest: Digest::sha256(b"other client"),
        size: 1,
        urls: vec![],
        annotations: Default::default(),
        platform: None,
        artifact_type: Some("application/vnd.other".into()),
    }
}

fn etag(bytes: &[u8]) -> String {
    format!("\"{}\"", Digest::sha256(bytes))
}

async fn fake_handler(
    State(st): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches("/v2/").to_owned();
    if let Some((repo, subject)) = path.split_once("/referrers/") {
        st.referrer_requests.fetch_add(1, Ordering::SeqCst);
        if !st.api {
            return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
        }
        return fake_referrers(&st, repo, subject, uri.query().unwrap_or(""));
    }
    let Some((repo, reference)) = path.split_once("/manifests/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let key = (repo.to_owned(), reference.to_owned());
    let mut store = st.manifests.lock().unwrap();
    match method {
        Method::GET | Method::HEAD => match store.get(&key) {
            Some((ct, bytes)) => (
                [
                    (header::CONTENT_TYPE, ct.clone()),
                    (header::ETAG, etag(bytes)),
                    (
                        header::HeaderName::from_static("docker-content-digest"),
                        Digest::sha256(bytes).to_string(),
                    ),
                ],
                bytes.clone(),
            )
                .into_response(),
            None => (
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            )
                .into_response(),
        },
        Method::PUT => {
            if let Some(want) = headers.get(header::IF_MATCH) {
                st.conditional_puts.fetch_add(1, Ordering::SeqCst);
                let current = store.get(&key).map(|(_, b)| etag(b));
                if st.race_next.swap(false, Ordering::SeqCst) {
                    // Another client adds its entry between our client's read and write.
                    if let Some((ct, b)) = store.get(&key).cloned() {
                        let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                        v["manifests"]
                            .as_array_mut()
                            .unwrap()
                            .push(serde_json::to_value(other_entry()).unwrap());
                        store.insert(key.clone(), (ct, Bytes::from(v.to_string())));
                    }
                    return StatusCode::PRECONDITION_FAILED.into_response();
                }
                if current.as_deref() != want.to_str().ok() {
                    return StatusCode::PRECONDITION_FAILED.into_response();
                }
            }
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(mt::OCI_MANIFEST)
                .to_owned();
            let d = Digest::sha256(&body);
            store.insert(key, (ct.clone(), body.clone()));
            store.insert((repo.to_owned(), d.to_string()), (ct, body));
            (
                StatusCode::CREATED,
                [(
                    header::HeaderName::from_static("docker-content-digest"),
                    d.to_string(),
                )],
            )
                .into_response()
        }
        Method::DELETE => match store.remove(&key) {
            Some(_) => StatusCode::ACCEPTED.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// The referrers API, one descriptor per page (`?page=N`), the filter ignored.
fn fake_referrers(st: &Fake, repo: &str, subject: &str, query: &str) -> Response {
    let store = st.manifests.lock().unwrap();
    let mut descs: Vec<Descriptor> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for ((r, _), (ct, bytes)) in store.iter() {
        let m = Manifest::from_bytes(bytes.clone(), Some(ct)).unwrap();
        if r != repo || !seen.insert(m.digest.clone()) {
            continue;
        }
        if let Some((s, d)) = berth_client::referrers::referrer_entry(&m) {
            if s.to_string() == subject {
                descs.push(d);
            }
        }
    }
    descs.sort_by(|a, b| a.digest.cmp(&b.digest));
    let page: usize = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("page="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let manifests: Vec<&Descriptor> = descs.iter().skip(page).take(1).collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_INDEX,
        "manifests": manifests,
    })
    .to_string();
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, mt::OCI_INDEX.parse().unwrap());
    if page + 1 < descs.len() {
        h.insert(
            header::LINK,
            format!(
                "</v2/{repo}/referrers/{subject}?page={}>; rel=\"next\"",
                page + 1
            )
            .parse()
            .unwrap(),
        );
    }
    (h, body).into_response()
}

struct FakeServer {
    host: String,
    state: Fake,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_fake(api: bool) -> FakeServer {
    let state = Fake {
        api,
        ..Fake::default()
    };
    let app = axum::Router::new()
        .fallback(fake_handler)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeServer { host, state, task }
}

/// The tag schema index the fake holds for `subject`, as descriptors.
fn tag_index(fake: &Fake, repo: &str, subject: &Digest) -> Option<(String, Vec<Descriptor>)> {
    let tag = referrers_tag(subject).unwrap().to_string();
    let store = fake.manifests.lock().unwrap();
    let (ct, bytes) = store.get(&(repo.to_owned(), tag))?;
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    Some((
        ct.clone(),
        serde_json::from_value(v["manifests"].clone()).unwrap(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn paginated_referrers_are_followed_and_filtered_by_the_client() {
    let fake = start_fake(true).await;
    let c = clients();
    let reg = c.registry(&fake.host).unwrap();
    let repo = RepoName::parse("team/app").unwrap();
    let img = image(60, 1, 100, "amd64", false);
    reg.put_manifest(&repo, &Reference::parse("1").unwrap(), &img.manifest)
        .await
        .unwrap();
    let mut pushed = Vec::new();
    for (i, t) in [SIG, SBOM, SIG].iter().enumerate() {
        let (m, _) = referrer(
            &img.manifest,
            t,
            format!("p{i}").as_bytes(),
            "2024-01-01T00:00:00Z",
        );
        reg.put_manifest(&repo, &Reference::Digest(m.digest.clone()), &m)
            .await
            .unwrap();
        pushed.push(m);
    }
    let all = reg
        .referrers(&repo, &img.manifest.digest, None)
        .await
        .unwrap();
    assert_eq!(
        digests(&all),
        sorted(pushed.iter().map(|m| m.digest.clone()).collect())
    );
    // Three pages of one descriptor each.
    assert_eq!(fake.state.referrer_requests.load(Ordering::SeqCst), 3);
    let sigs = reg
        .referrers(&repo, &img.manifest.digest, Some(SIG))
        .await
        .unwrap();
    assert_eq!(
        digests(&sigs),
        sorted(vec![pushed[0].digest.clone(), pushed[2].digest.clone()])
    );
    // The registry lists referrers, so listing never fell back to a tag: there is none,
    // and the client (seeing no OCI-Subject) still kept the tag schema index, as the
    // spec asks whenever the header is missing.
    let (_, listed) = tag_index(&fake.state, "team/app", &img.manifest.digest).unwrap();
    assert_eq!(listed.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_api_the_tag_schema_is_kept_and_listed() {
    let fake = start_fake(false).await;
    let c = clients();
    let reg = c.registry(&fake.host).unwrap();
    let repo = RepoName::parse("app").unwrap();
    // The subject is an index, so that inspect needs no blob from the fake.
    let img = image(70, 1, 100, "amd64", false);
    let idx = index(&[(&img, "amd64")]);
    reg.put_manifest(&repo, &Reference::parse("1.0").unwrap(), &idx)
        .await
        .unwrap();
    // No referrers and no tag yet.
    assert!(reg
        .referrers(&repo, &idx.digest, None)
        .await
        .unwrap()
        .is_empty());
    assert!(tag_index(&fake.state, "app", &idx.digest).is_none());

    let (sig, _) = referrer(&idx, SIG, b"sig", "2024-05-06T07:08:09Z");
    let (sbom, _) = referrer(&idx, SBOM, b"sbom", "2024-05-07T00:00:00Z");
    reg.put_manifest(&repo, &Reference::Digest(sig.digest.clone()), &sig)
        .await
        .unwrap();
    let (ct, listed) = tag_index(&fake.state, "app", &idx.digest).unwrap();
    assert_eq!(ct, mt::OCI_INDEX);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, sig.digest);
    assert_eq!(listed[0].media_type, mt::OCI_MANIFEST);
    assert_eq!(listed[0].size, sig.bytes.len() as u64);
    assert_eq!(listed[0].artifact_type.as_deref(), Some(SIG));
    let mut want = BTreeMap::new();
    want.insert(CREATED.to_owned(), "2024-05-06T07:08:09Z".to_owned());
    assert_eq!(listed[0].annotations, want);

    // Pushing it again (say, under a tag) adds no duplicate entry.
    reg.put_manifest(&repo, &Reference::parse("sig").unwrap(), &sig)
        .await
        .unwrap();
    reg.put_manifest(&repo, &Reference::Digest(sbom.digest.clone()), &sbom)
        .await
        .unwrap();
    let (_, listed) = tag_index(&fake.state, "app", &idx.digest).unwrap();
    assert_eq!(
        digests(&listed),
        sorted(vec![sig.digest.clone(), sbom.digest.clone()])
    );

    let all = reg.referrers(&repo, &idx.digest, None).await.unwrap();
    assert_eq!(
        digests(&all),
        sorted(vec![sig.digest.clone(), sbom.digest.clone()])
    );
    let only = reg.referrers(&repo, &idx.digest, Some(SBOM)).await.unwrap();
    assert_eq!(digests(&only), vec![sbom.digest.clone()]);
    assert_eq!(only[0].annotations[CREATED], "2024-05-07T00:00:00Z");

    // Another client writes the index between this client's read and write: the
    // conditional PUT is refused, the client reads again and keeps both entries.
    let (third, _) = referrer(&idx, SIG, b"third", "2024-05-08T00:00:00Z");
    fake.state.race_next.store(true, Ordering::SeqCst);
    let before = fake.state.conditional_puts.load(Ordering::SeqCst);
    reg.put_manifest(&repo, &Reference::Digest(third.digest.clone()), &third)
        .await
        .unwrap();
    assert_eq!(
        fake.state.conditional_puts.load(Ordering::SeqCst),
        before + 2
    );
    let (_, listed) = tag_index(&fake.state, "app", &idx.digest).unwrap();
    assert_eq!(
        digests(&listed),
        sorted(vec![
            sig.digest.clone(),
            sbom.digest.clone(),
            other_entry().digest,
            third.digest.clone()
        ])
    );

    // Deleting a referrer removes its entry.
    reg.delete_referrer(&repo, &sig, false).await.unwrap();
    let (_, listed) = tag_index(&fake.state, "app", &idx.digest).unwrap();
    assert!(!listed.iter().any(|d| d.digest == sig.digest));
    assert_eq!(listed.len(), 3);
    assert!(reg
        .get_manifest(&repo, &Reference::Digest(sig.digest.clone()))
        .await
        .is_err());

    // inspect lists the referrers through the fallback too.
    let src = open_source(
        &c,
        &Location::parse(&format!("{}/app:1.0", fake.host)).unwrap(),
    )
    .await
    .unwrap();
    let info = berth_client::inspect::inspect(src.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(info.referrers.as_ref().map(Vec::len), Some(3));
}
