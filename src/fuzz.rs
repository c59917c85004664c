//! Property tests that feed arbitrary input to every parser of user files and flags
//! (inventory CSV, plan CSV, replication rules, `s3://` URLs, sizes, durations, times):
//! each must answer with a value or an error, never a panic.

use std::path::Path;

use proptest::prelude::*;

use crate::cli::{parse_as_of, parse_duration, parse_size};
use crate::inventory::InventoryReader;
use crate::model::Location;
use crate::plan::PlanReader;

/// Text that looks like the files these parsers read, with the bytes that break them.
fn csvish() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "key",
        "version_id",
        "is_latest",
        "is_delete_marker",
        "last_modified",
        "size",
        "etag",
        "storage_class",
        "action",
        "source_version_id",
        "dest_key",
        "dest_version_id",
        "reason",
        "source",
        "dest",
        "copy",
        "skip",
        "true",
        "false",
        "2026-01-01T00:00:00Z",
        "s3://rep",
        "s3://pri",
        "null",
        "STANDARD",
        ",",
        "\"",
        "\n",
        "\r\n",
        "\u{feff}",
        "=",
        "é",
        "-1",
        "99999999999999999999",
        "",
    ]);
    prop::collection::vec(pieces, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn inventory_reader_never_panics(text in csvish(), raw in ".{0,200}") {
        for input in [text, raw] {
            if let Ok(reader) = InventoryReader::new(input.as_bytes(), Path::new("fuzz.csv")) {
                for row in reader {
                    let _ = row;
                }
            }
        }
    }

    #[test]
    fn plan_reader_never_panics(text in csvish(), raw in ".{0,200}") {
        let (src, dst) = (Location::new("rep", ""), Location::new("pri", ""));
        for input in [text, raw] {
            if let Ok(reader) = PlanReader::new(input.as_bytes(), "fuzz.csv", &src, &dst) {
                for row in reader {
                    let _ = row;
                }
            }
        }
    }

    #[test]
    fn rules_parser_never_panics(raw in ".{0,300}") {
        let _ = crate::rules::parse_json(&raw, "fuzz.json");
    }

    #[test]
    fn flag_parsers_never_panic(raw in ".{0,40}") {
        let _ = raw.parse::<Location>();
        let _ = parse_size(&raw);
        let _ = parse_duration(&raw);
        let _ = parse_as_of(&raw, jiff::Timestamp::now());
    }

    #[test]
    fn locations_round_trip(bucket in "[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]", prefix in ".{0,60}") {
        let url = format!("s3://{bucket}/{prefix}");
        let loc: Location = url.parse().unwrap();
        prop_assert_eq!(&loc.bucket, &bucket);
        prop_assert_eq!(&loc.prefix, &prefix);
        let again: Location = loc.to_string().parse().unwrap();
        prop_assert_eq!(again, loc);
    }

    #[test]
    fn sizes_with_units_scale(n in 0u64..1_000_000, unit in prop::sample::select(vec![("", 1u64), ("KiB", 1024), ("MB", 1_000_000), ("gib", 1 << 30)])) {
        prop_assert_eq!(parse_size(&format!("{n}{}", unit.0)), Ok(n * unit.1));
    }
}
