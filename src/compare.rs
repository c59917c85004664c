//! Comparisons that need more than a listing: content headers, user metadata and tags of
//! two versions (`--metadata`). Shared by `plan`/`restore` (a difference becomes a copy)
//! and `verify` (a difference is `differs`).

use crate::s3::{DestClient, S3Error, SourceClient};

/// One source version and the destination version it is compared with.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    /// Source bucket.
    pub source_bucket: &'a str,
    /// Source key.
    pub source_key: &'a str,
    /// Source version id.
    pub source_version_id: &'a str,
    /// Destination bucket.
    pub dest_bucket: &'a str,
    /// Destination key.
    pub dest_key: &'a str,
    /// Destination version id.
    pub dest_version_id: &'a str,
}

/// What differs between the two versions' content headers, user metadata and tags, in
/// words for people; `None` when nothing does. Four reads: a HEAD and a GetObjectTagging
/// on each side.
///
/// # Errors
/// A read failed.
pub async fn metadata_diff(source: &SourceClient, dest: &DestClient, p: Pair<'_>) -> Result<Option<String>, S3Error> {
    let (sh, dh) = tokio::try_join!(
        source.head_version(p.source_bucket, p.source_key, p.source_version_id, None),
        dest.head_version(p.dest_bucket, p.dest_key, Some(p.dest_version_id))
    )?;
    let mut diffs = Vec::new();
    let fields = [
        ("Content-Type", &sh.content.content_type, &dh.content.content_type),
        ("Cache-Control", &sh.content.cache_control, &dh.content.cache_control),
        (
            "Content-Disposition",
            &sh.content.content_disposition,
            &dh.content.content_disposition,
        ),
        (
            "Content-Encoding",
            &sh.content.content_encoding,
            &dh.content.content_encoding,
        ),
        (
            "Content-Language",
            &sh.content.content_language,
            &dh.content.content_language,
        ),
        ("Expires", &sh.content.expires, &dh.content.expires),
        (
            "Website-Redirect-Location",
            &sh.content.website_redirect_location,
            &dh.content.website_redirect_location,
        ),
    ];
    for (name, s, d) in fields {
        if s != d {
            diffs.push(format!("{name} {d:?} in the primary, {s:?} in the replica"));
        }
    }
    if sh.metadata != dh.metadata {
        diffs.push(format!(
            "user metadata {:?} in the primary, {:?} in the replica",
            dh.metadata, sh.metadata
        ));
    }
    let (mut st, mut dt) = tokio::try_join!(
        source.get_tags(p.source_bucket, p.source_key, p.source_version_id),
        dest.get_tags(p.dest_bucket, p.dest_key, p.dest_version_id)
    )?;
    st.sort();
    dt.sort();
    if st != dt {
        diffs.push(format!("tags {dt:?} in the primary, {st:?} in the replica"));
    }
    Ok(if diffs.is_empty() { None } else { Some(diffs.join("; ")) })
}
