//! The streaming merge-join of the source (replica) and dest (primary) listings.
//!
//! Both inputs arrive in S3's order: keys in UTF-8 byte order, a key's versions newest
//! first. The join groups each side's records by key, keeps the source keys that the
//! source location selects, maps them onto the dest location and pairs them with the dest
//! key of the same name. Only one key's versions per side are held at a time, so memory
//! stays flat however large the buckets are.
//!
//! Deciding what to do with a key is left to `plan`; listing is left to `s3` and
//! `inventory`. No I/O happens here.

use std::cmp::Ordering;
use std::pin::Pin;

use futures::{Stream, StreamExt};

use crate::model::{Location, Side, VersionRecord};

/// Why the merge-join cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A side's keys went backwards, so its listing is not in S3's order (or a key's
    /// records were not contiguous).
    #[error("{side} listing is out of order: key {next:?} follows key {prev:?}")]
    OutOfOrder {
        /// The side whose listing is out of order.
        side: Side,
        /// The key seen before.
        prev: String,
        /// The key that should have come before `prev`.
        next: String,
    },
    /// A source key maps onto an empty key under the dest location (`s3://rep/data` onto
    /// `s3://pri` maps the key `data` onto nothing), and S3 has no empty key.
    #[error("source key {source_key:?} maps onto an empty key under the dest location; give the dest a prefix")]
    EmptyDestKey {
        /// The source key.
        source_key: String,
    },
    /// A side's listing failed.
    #[error("cannot list {side} versions")]
    Listing {
        /// The side whose listing failed.
        side: Side,
        /// The listing's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// The two locations the join works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// The replica location: its keys are selected and mapped onto `dest`.
    pub source: Location,
    /// The primary location.
    pub dest: Location,
}

/// One source key with its versions on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDiff {
    /// The key in the source bucket.
    pub source_key: String,
    /// The key it maps onto in the dest bucket.
    pub dest_key: String,
    /// The source key's versions and delete markers, newest first (never empty).
    pub source: Vec<VersionRecord>,
    /// The dest key's versions and delete markers, newest first (empty when it has none).
    pub dest: Vec<VersionRecord>,
}

/// One item of the join: a source key, or a key that only the dest has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// A key the source has, with whatever the dest has under the mapped key.
    Key(KeyDiff),
    /// A key only the dest has: outside the target, left alone, counted as `primary_only`.
    PrimaryOnly {
        /// The key in the dest bucket.
        dest_key: String,
        /// Its versions and delete markers, newest first.
        versions: Vec<VersionRecord>,
    },
}

/// Merge-joins the source and dest listings into one item per key, in dest key order.
///
/// The stream ends after the first error.
///
/// # Errors
///
/// Yields [`ReconcileError::OutOfOrder`] when a side's keys go backwards and
/// [`ReconcileError::Listing`] when a side's stream yields an error.
pub fn reconcile<S, D, ES, ED>(
    source: S,
    dest: D,
    cfg: ReconcileConfig,
) -> impl Stream<Item = Result<Reconciled, ReconcileError>>
where
    S: Stream<Item = Result<VersionRecord, ES>>,
    D: Stream<Item = Result<VersionRecord, ED>>,
    ES: std::error::Error + Send + Sync + 'static,
    ED: std::error::Error + Send + Sync + 'static,
{
    let join = Join {
        source: SideReader::new(Side::Source, source, Some(cfg.source), cfg.dest.clone()),
        dest: SideReader::new(Side::Dest, dest, None, cfg.dest),
        source_next: None,
        dest_next: None,
        failed: false,
    };
    futures::stream::unfold(join, |mut join| async move {
        if join.failed {
            return None;
        }
        match join.step().await {
            Ok(Some(item)) => Some((Ok(item), join)),
            Ok(None) => None,
            Err(e) => {
                join.failed = true;
                Some((Err(e), join))
            }
        }
    })
}

/// One key's records from one side.
struct Group {
    /// The key under the dest location (the mapped key for the source side).
    mapped: String,
    /// The key as listed.
    key: String,
    versions: Vec<VersionRecord>,
}

/// Reads one side's records and groups them by key, checking S3's order.
struct SideReader<St> {
    side: Side,
    stream: Pin<Box<St>>,
    /// For the source side, the location whose keys are mapped onto `to`.
    from: Option<Location>,
    to: Location,
    /// The first record of the next key, already checked.
    lookahead: Option<VersionRecord>,
    last_key: Option<String>,
    finished: bool,
}

impl<St, E> SideReader<St>
where
    St: Stream<Item = Result<VersionRecord, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    fn new(side: Side, stream: St, from: Option<Location>, to: Location) -> Self {
        SideReader {
            side,
            stream: Box::pin(stream),
            from,
            to,
            lookahead: None,
            last_key: None,
            finished: false,
        }
    }

    /// The key under the dest location, or `None` when this side's location does not
    /// select `key`.
    fn select(&self, key: &str) -> Option<String> {
        match &self.from {
            Some(from) => self.to.map_key_from(from, key),
            None => self.to.selects(key).then(|| key.to_owned()),
        }
    }

    /// The next record, checked against the order of the ones before it.
    async fn pull(&mut self) -> Result<Option<VersionRecord>, ReconcileError> {
        if self.finished {
            return Ok(None);
        }
        let record = match self.stream.next().await {
            None => {
                self.finished = true;
                return Ok(None);
            }
            Some(Err(e)) => {
                return Err(ReconcileError::Listing {
                    side: self.side,
                    source: Box::new(e),
                });
            }
            Some(Ok(record)) => record,
        };
        match &mut self.last_key {
            // Keys arrive in UTF-8 byte order, which is `str`'s order; a key seen again
            // after a greater one means the listing is unsorted or not contiguous.
            Some(prev) => match record.key.as_str().cmp(prev.as_str()) {
                Ordering::Less => {
                    return Err(ReconcileError::OutOfOrder {
                        side: self.side,
                        prev: prev.clone(),
                        next: record.key,
                    });
                }
                Ordering::Equal => {}
                // The buffer is reused: a new key costs a copy, not an allocation.
                Ordering::Greater => {
                    prev.clear();
                    prev.push_str(&record.key);
                }
            },
            None => self.last_key = Some(record.key.clone()),
        }
        Ok(Some(record))
    }

    /// The next selected key with all its records, newest first as listed.
    async fn next_group(&mut self) -> Result<Option<Group>, ReconcileError> {
        let mut group: Option<Group> = None;
        loop {
            let record = match self.lookahead.take() {
                Some(record) => record,
                None => match self.pull().await? {
                    Some(record) => record,
                    None => return Ok(group),
                },
            };
            match &mut group {
                // A key's versions arrive newest first; the group keeps that order.
                Some(g) if g.key == record.key => g.versions.push(record),
                Some(_) => {
                    self.lookahead = Some(record);
                    return Ok(group);
                }
                None => {
                    if let Some(mapped) = self.select(&record.key) {
                        if mapped.is_empty() {
                            return Err(ReconcileError::EmptyDestKey { source_key: record.key });
                        }
                        group = Some(Group {
                            mapped,
                            key: record.key.clone(),
                            // Room for a few versions: most keys have one to three, and
                            // growing from one moves them each time.
                            versions: {
                                let mut versions = Vec::with_capacity(4);
                                versions.push(record);
                                versions
                            },
                        });
                    }
                }
            }
        }
    }
}

struct Join<S, D> {
    source: SideReader<S>,
    dest: SideReader<D>,
    source_next: Option<Group>,
    dest_next: Option<Group>,
    failed: bool,
}

impl<S, D, ES, ED> Join<S, D>
where
    S: Stream<Item = Result<VersionRecord, ES>>,
    D: Stream<Item = Result<VersionRecord, ED>>,
    ES: std::error::Error + Send + Sync + 'static,
    ED: std::error::Error + Send + Sync + 'static,
{
    async fn step(&mut self) -> Result<Option<Reconciled>, ReconcileError> {
        if self.source_next.is_none() {
            self.source_next = self.source.next_group().await?;
        }
        if self.dest_next.is_none() {
            self.dest_next = self.dest.next_group().await?;
        }
        // Mapping a source key onto the dest location keeps the order (the prefix is
        // replaced, the rest kept), so the mapped keys can be compared with dest keys.
        let item = match (self.source_next.take(), self.dest_next.take()) {
            (None, None) => return Ok(None),
            (Some(s), None) => key_diff(s, Vec::new()),
            (None, Some(d)) => primary_only(d),
            (Some(s), Some(d)) => match s.mapped.cmp(&d.mapped) {
                Ordering::Less => {
                    self.dest_next = Some(d);
                    key_diff(s, Vec::new())
                }
                Ordering::Greater => {
                    self.source_next = Some(s);
                    primary_only(d)
                }
                Ordering::Equal => key_diff(s, d.versions),
            },
        };
        Ok(Some(item))
    }
}

fn key_diff(source: Group, dest: Vec<VersionRecord>) -> Reconciled {
    Reconciled::Key(KeyDiff {
        source_key: source.key,
        dest_key: source.mapped,
        source: source.versions,
        dest,
    })
}

fn primary_only(dest: Group) -> Reconciled {
    Reconciled::PrimaryOnly {
        dest_key: dest.key,
        versions: dest.versions,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use futures::executor::block_on;
    use jiff::Timestamp;
    use proptest::prelude::*;

    use super::*;

    /// A listing error for tests.
    #[derive(Debug, thiserror::Error)]
    #[error("listing broke")]
    pub(crate) struct Broken;

    /// An object version with a size and ETag derived from `content`.
    pub(crate) fn rec(key: &str, version_id: &str, t: i64, content: u8) -> VersionRecord {
        VersionRecord {
            key: key.to_owned(),
            version_id: version_id.to_owned(),
            is_latest: false,
            is_delete_marker: false,
            last_modified: Timestamp::from_second(t).unwrap(),
            size_bytes: 100 + u64::from(content),
            etag: Some(format!("e{content}")),
            storage_class: Some("STANDARD".to_owned()),
            checksum_algorithm: None,
        }
    }

    /// A delete marker.
    pub(crate) fn dm(key: &str, version_id: &str, t: i64) -> VersionRecord {
        VersionRecord {
            key: key.to_owned(),
            version_id: version_id.to_owned(),
            is_latest: false,
            is_delete_marker: true,
            last_modified: Timestamp::from_second(t).unwrap(),
            size_bytes: 0,
            etag: None,
            storage_class: None,
            checksum_algorithm: None,
        }
    }

    fn loc(s: &str) -> Location {
        s.parse().unwrap()
    }

    fn run(
        source: Vec<VersionRecord>,
        dest: Vec<VersionRecord>,
        from: &str,
        to: &str,
    ) -> Vec<Result<Reconciled, ReconcileError>> {
        let cfg = ReconcileConfig {
            source: loc(from),
            dest: loc(to),
        };
        let s = futures::stream::iter(source.into_iter().map(Ok::<_, Broken>));
        let d = futures::stream::iter(dest.into_iter().map(Ok::<_, Broken>));
        block_on(reconcile(s, d, cfg).collect())
    }

    /// (source key, dest key, source version ids, dest version ids) per diff, and the
    /// primary-only dest keys.
    type Summary = (Vec<(String, String, Vec<String>, Vec<String>)>, Vec<String>);

    fn summarize(items: Vec<Result<Reconciled, ReconcileError>>) -> Summary {
        let ids = |v: &[VersionRecord]| v.iter().map(|r| r.version_id.clone()).collect();
        let mut diffs = Vec::new();
        let mut only = Vec::new();
        for item in items {
            match item.unwrap() {
                Reconciled::Key(d) => diffs.push((d.source_key, d.dest_key, ids(&d.source), ids(&d.dest))),
                Reconciled::PrimaryOnly { dest_key, .. } => only.push(dest_key),
            }
        }
        (diffs, only)
    }

    fn row(s: &str, d: &str, sv: &[&str], dv: &[&str]) -> (String, String, Vec<String>, Vec<String>) {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        (s.to_owned(), d.to_owned(), v(sv), v(dv))
    }

    #[test]
    fn joins_keys_of_both_sides() {
        let source = vec![
            rec("a", "s2", 2, 1),
            rec("a", "s1", 1, 0),
            dm("b", "s3", 3),
            rec("c", "s4", 4, 0),
        ];
        let dest = vec![
            rec("a", "s1", 1, 0),
            rec("aa", "d1", 1, 0),
            dm("c", "d3", 5),
            rec("c", "d2", 2, 0),
            rec("z", "d4", 2, 0),
        ];
        let (diffs, only) = summarize(run(source, dest, "s3://rep", "s3://pri"));
        assert_eq!(
            diffs,
            vec![
                row("a", "a", &["s2", "s1"], &["s1"]),
                row("b", "b", &["s3"], &[]),
                row("c", "c", &["s4"], &["d3", "d2"]),
            ]
        );
        assert_eq!(only, vec!["aa", "z"]);
    }

    #[test]
    fn maps_prefixes_and_filters_keys() {
        let source = vec![
            rec("data", "s0", 1, 0),
            rec("data-x", "s1", 1, 0),
            rec("data/x", "s2", 1, 0),
            rec("data/y", "s3", 1, 0),
            rec("database/x", "s4", 1, 0),
        ];
        let dest = vec![
            rec("restored", "d0", 1, 0),
            rec("restored/w", "d1", 1, 0),
            rec("restored/y", "d3", 1, 0),
            rec("restoredx", "d9", 1, 0),
        ];
        let (diffs, only) = summarize(run(source, dest, "s3://rep/data", "s3://pri/restored"));
        assert_eq!(
            diffs,
            vec![
                row("data", "restored", &["s0"], &["d0"]),
                row("data/x", "restored/x", &["s2"], &[]),
                row("data/y", "restored/y", &["s3"], &["d3"]),
            ]
        );
        // `restoredx` is outside the dest location: not even primary-only.
        assert_eq!(only, vec!["restored/w"]);
    }

    #[test]
    fn empty_sides() {
        let (diffs, only) = summarize(run(vec![], vec![], "s3://rep", "s3://pri"));
        assert!(diffs.is_empty() && only.is_empty());
        let (diffs, only) = summarize(run(vec![], vec![dm("k", "d", 1)], "s3://rep", "s3://pri"));
        assert!(diffs.is_empty());
        assert_eq!(only, vec!["k"]);
    }

    #[test]
    fn rejects_out_of_order_sides() {
        type Case = (Vec<VersionRecord>, Vec<VersionRecord>, Side, &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (
                vec![rec("b", "1", 1, 0), rec("a", "2", 1, 0)],
                vec![],
                Side::Source,
                "b",
                "a",
            ),
            (
                vec![],
                vec![rec("k", "1", 1, 0), rec("j", "2", 1, 0)],
                Side::Dest,
                "k",
                "j",
            ),
            // A key whose records are not contiguous.
            (
                vec![rec("a", "1", 1, 0), rec("b", "2", 1, 0), rec("a", "3", 1, 0)],
                vec![],
                Side::Source,
                "b",
                "a",
            ),
            // Unsorted keys outside the location are an error too.
            (
                vec![rec("x", "1", 1, 0), rec("data/x", "2", 1, 0)],
                vec![],
                Side::Source,
                "x",
                "data/x",
            ),
        ];
        for (source, dest, want_side, want_prev, want_next) in cases {
            let items = run(source, dest, "s3://rep", "s3://pri");
            let err = items
                .iter()
                .find_map(|i| i.as_ref().err())
                .expect("an out-of-order error");
            match err {
                ReconcileError::OutOfOrder { side, prev, next } => {
                    assert_eq!((*side, prev.as_str(), next.as_str()), (want_side, want_prev, want_next));
                }
                other => panic!("unexpected {other}"),
            }
            // The stream ends with the error.
            assert!(items.last().unwrap().is_err());
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{want_prev:?}")) && msg.contains(&format!("{want_next:?}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn rejects_a_source_key_mapped_onto_nothing() {
        for (key, from) in [("data", "s3://rep/data"), ("data/", "s3://rep/data/")] {
            let items = run(vec![rec(key, "1", 1, 0)], vec![], from, "s3://pri");
            assert!(
                matches!(&items[..], [Err(ReconcileError::EmptyDestKey { source_key })] if source_key == key),
                "{items:?}"
            );
        }
    }

    #[test]
    fn listing_error_ends_the_stream() {
        let cfg = ReconcileConfig {
            source: loc("s3://rep"),
            dest: loc("s3://pri"),
        };
        let s = futures::stream::iter(vec![Ok(rec("a", "1", 1, 0)), Err(Broken), Ok(rec("b", "2", 1, 0))]);
        let d = futures::stream::iter(Vec::<Result<VersionRecord, Broken>>::new());
        let items: Vec<_> = block_on(reconcile(s, d, cfg).collect());
        assert_eq!(items.len(), 1);
        let err = items[0].as_ref().unwrap_err();
        assert_eq!(err.to_string(), "cannot list source versions");
        assert!(matches!(err, ReconcileError::Listing { side: Side::Source, .. }));
    }

    const KEYS: &[&str] = &[
        "a",
        "a/b",
        "data",
        "data-x",
        "data/",
        "data/x",
        "data/y/z",
        "database",
        "restored",
        "restored/x",
        "restoredx",
        "x",
        "é",
        "z\u{10ffff}",
    ];
    const LOCATIONS: &[(&str, &str)] = &[
        ("s3://rep", "s3://pri"),
        ("s3://rep/data", "s3://pri/restored"),
        ("s3://rep/data/", "s3://pri/restored/"),
        ("s3://rep/data", "s3://pri"),
        ("s3://rep", "s3://pri/restored"),
    ];

    type Listing = BTreeMap<String, Vec<VersionRecord>>;
    /// Per dest key: the source key and its versions, and the dest versions.
    type Model = BTreeMap<String, (Option<(String, Vec<VersionRecord>)>, Vec<VersionRecord>)>;

    /// A listing in S3's order: records by key, each key's versions in listing order.
    fn listing(keys: std::ops::Range<usize>) -> impl Strategy<Value = Listing> {
        prop::collection::btree_map(prop::sample::select(KEYS).prop_map(str::to_owned), 1usize..4, keys).prop_map(
            |keys| {
                keys.into_iter()
                    .map(|(k, n)| {
                        let versions = (0..n).map(|i| rec(&k, &format!("{k}#{i}"), 10 - i as i64, 0)).collect();
                        (k, versions)
                    })
                    .collect()
            },
        )
    }

    proptest! {
        /// The join never drops or duplicates a key, compared with a `BTreeMap` join.
        #[test]
        fn join_matches_btreemap_model(
            source in listing(0..8),
            dest in listing(0..8),
            locs in prop::sample::select(LOCATIONS),
        ) {
            let (from, to) = (loc(locs.0), loc(locs.1));
            let flat = |m: &BTreeMap<String, Vec<VersionRecord>>| m.values().flatten().cloned().collect::<Vec<_>>();
            let items = run(flat(&source), flat(&dest), locs.0, locs.1);

            // The model: a map from dest key to (source versions, dest versions).
            let mut model = Model::new();
            for (k, v) in &source {
                if let Some(mapped) = to.map_key_from(&from, k) {
                    model.entry(mapped).or_default().0 = Some((k.clone(), v.clone()));
                }
            }
            for (k, v) in &dest {
                if to.selects(k) {
                    model.entry(k.clone()).or_default().1 = v.clone();
                }
            }
            let want: Vec<Reconciled> = model
                .into_iter()
                .map(|(dest_key, (s, d))| match s {
                    Some((source_key, source)) => Reconciled::Key(KeyDiff { source_key, dest_key, source, dest: d }),
                    None => Reconciled::PrimaryOnly { dest_key, versions: d },
                })
                .collect();
            if want.iter().any(|w| matches!(w, Reconciled::Key(d) if d.dest_key.is_empty())) {
                let is_empty_key = matches!(items.last(), Some(Err(ReconcileError::EmptyDestKey { .. })));
                prop_assert!(is_empty_key);
                return Ok(());
            }
            let got: Vec<Reconciled> = items.into_iter().map(Result::unwrap).collect();
            prop_assert_eq!(got, want);
        }

        /// Swapping two records of different keys in a sorted listing is always caught.
        #[test]
        fn unsorted_listing_is_caught(
            source in listing(2..8),
            i in any::<prop::sample::Index>(),
            j in any::<prop::sample::Index>(),
        ) {
            let mut flat: Vec<VersionRecord> = source.values().flatten().cloned().collect();
            let a = i.index(flat.len());
            let others: Vec<usize> = (0..flat.len()).filter(|&b| flat[b].key != flat[a].key).collect();
            flat.swap(a, others[j.index(others.len())]);
            let items = run(flat, vec![], "s3://rep", "s3://pri");
            let is_out_of_order = matches!(items.last(), Some(Err(ReconcileError::OutOfOrder { .. })));
            prop_assert!(is_out_of_order);
        }
    }
}
