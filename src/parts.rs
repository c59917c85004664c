//! Pure part arithmetic for multipart copies: S3's size limits, the exact layout of a
//! multipart source, and the split of a single-part source into equal parts.
//!
//! Reading the layout (HEAD with `partNumber=k`) and sending the requests belong to
//! `restore::multipart`; warning about a `--part-size` below S3's minimum belongs to
//! the CLI. Nothing here does I/O.

/// The smallest part S3 accepts, except for an upload's last part (5 MiB).
pub const MIN_PART_SIZE_BYTES: u64 = 5 * 1024 * 1024;

/// The largest part S3 accepts (5 GiB).
pub const MAX_PART_SIZE_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// The most parts one multipart upload may have.
pub const MAX_PARTS: u32 = 10_000;

/// The largest object one CopyObject request copies (5 GiB).
pub const MAX_COPY_OBJECT_BYTES: u64 = 5_368_709_120;

/// The largest object a multipart copy can write: 10,000 parts of 5 GiB (about 50 TB).
///
/// S3 documents "about 50 TB" without an exact figure; this is the most the part limits
/// allow, so anything larger cannot be copied whatever S3's own ceiling is.
pub const MAX_OBJECT_BYTES: u64 = MAX_PART_SIZE_BYTES * MAX_PARTS as u64;

/// The part size used when none is given and the object is small enough (64 MiB).
pub const DEFAULT_PART_SIZE_BYTES: u64 = 64 * 1024 * 1024;

/// Why a part layout cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartsError {
    /// The source reported a multipart layout without parts.
    #[error("multipart layout has no parts")]
    NoParts,
    /// The layout has more parts than one upload may have.
    #[error("multipart layout has {count} parts, more than the {MAX_PARTS} S3 allows")]
    TooManyParts {
        /// How many parts the layout has.
        count: usize,
    },
    /// A part other than the last has no bytes.
    #[error("part {part_number} of {count} is empty, and only the last part may be")]
    EmptyPart {
        /// The empty part's number (1-based).
        part_number: u32,
        /// How many parts the layout has.
        count: usize,
    },
    /// The parts' sizes add up to more than a `u64` holds.
    #[error("multipart layout's part sizes add up to more than 2^64 bytes")]
    SizeOverflow,
    /// The object is larger than 10,000 parts of 5 GiB.
    #[error(
        "object of {size_bytes} bytes is larger than {MAX_OBJECT_BYTES} bytes, \
         the most 10,000 parts of 5 GiB can hold"
    )]
    ObjectTooLarge {
        /// The object's size.
        size_bytes: u64,
    },
}

/// One part of a multipart copy: its number and the source bytes it copies.
///
/// `first` and `last` are inclusive, as `x-amz-copy-source-range: bytes=first-last`
/// wants. An empty part (only ever the last one: the one part of an empty object, or a
/// zero-length final part of a multipart source) copies no bytes: `len_bytes` is 0,
/// `first` and `last` both hold its offset and [`PartRange::header_value`] is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartRange {
    /// The part number, from 1.
    pub part_number: u32,
    /// Offset of the part's first byte in the source.
    pub first: u64,
    /// Offset of the part's last byte in the source (inclusive).
    pub last: u64,
    /// The part's length; 0 only for an empty last part.
    pub len_bytes: u64,
}

impl PartRange {
    /// Builds the part `part_number` covering `len_bytes` bytes from `offset`.
    fn at(part_number: u32, offset: u64, len_bytes: u64) -> Self {
        let last = match len_bytes {
            0 => offset,
            n => offset + (n - 1),
        };
        PartRange {
            part_number,
            first: offset,
            last,
            len_bytes,
        }
    }

    /// The `x-amz-copy-source-range` value, `bytes=first-last`; `None` for an empty part.
    ///
    /// A range cannot name zero bytes: for the empty part of an empty object send
    /// UploadPartCopy without a range (it copies the whole, empty, source); for an empty
    /// last part of a non-empty object send UploadPart with an empty body.
    pub fn header_value(&self) -> Option<String> {
        (self.len_bytes > 0).then(|| format!("bytes={}-{}", self.first, self.last))
    }

    /// Whether the part copies no bytes.
    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }
}

/// The exact layout of a multipart source from each part's length, in part order.
///
/// Copying part by part with the same byte ranges reproduces the source's ETag, which
/// a layout guessed from a count, a first size and a total cannot do (10/5/10 and
/// 10/10/5 share all three). Part sizes are not checked against S3's 5 MiB minimum: the
/// source exists, so its server accepted them.
///
/// # Errors
///
/// [`PartsError::NoParts`] for an empty list, [`PartsError::TooManyParts`] above
/// 10,000 parts, [`PartsError::EmptyPart`] for a zero-length part other than the last,
/// [`PartsError::SizeOverflow`] when the sizes add up past `u64::MAX`.
pub fn layout_from_sizes(sizes: &[u64]) -> Result<Vec<PartRange>, PartsError> {
    if sizes.is_empty() {
        return Err(PartsError::NoParts);
    }
    if sizes.len() > MAX_PARTS as usize {
        return Err(PartsError::TooManyParts { count: sizes.len() });
    }
    let mut parts = Vec::with_capacity(sizes.len());
    let mut offset = 0u64;
    for (part_number, &len) in (1u32..).zip(sizes) {
        if len == 0 && (part_number as usize) < sizes.len() {
            return Err(PartsError::EmptyPart {
                part_number,
                count: sizes.len(),
            });
        }
        parts.push(PartRange::at(part_number, offset, len));
        offset = offset.checked_add(len).ok_or(PartsError::SizeOverflow)?;
    }
    Ok(parts)
}

/// The part size used for an object of `size_bytes` when `--part-size` is not given:
/// the larger of 64 MiB and ceil(size / 10,000).
pub fn default_part_size(size_bytes: u64) -> u64 {
    DEFAULT_PART_SIZE_BYTES.max(min_part_size_for(size_bytes))
}

/// The smallest part size that fits `size_bytes` into 10,000 parts.
pub fn min_part_size_for(size_bytes: u64) -> u64 {
    size_bytes.div_ceil(u64::from(MAX_PARTS))
}

/// The part size [`split`] really uses when asked for `part_size_bytes`.
///
/// A size too small for 10,000 parts is raised to ceil(size / 10,000) (the smallest
/// that fits, as the AWS CLI does with its chunk size); a size above 5 GiB is lowered
/// to 5 GiB. Sizes below S3's 5 MiB minimum are kept (see [`below_s3_minimum`]).
pub fn effective_part_size(size_bytes: u64, part_size_bytes: u64) -> u64 {
    part_size_bytes
        .min(MAX_PART_SIZE_BYTES)
        .max(min_part_size_for(size_bytes))
}

/// Whether S3 would refuse parts of this size (below 5 MiB) as anything but the last part.
///
/// Such sizes are still honoured: test servers can be told to accept them, and the CLI
/// warns.
pub fn below_s3_minimum(part_size_bytes: u64) -> bool {
    part_size_bytes < MIN_PART_SIZE_BYTES
}

/// Splits a single-part source of `size_bytes` into parts of `part_size_bytes`, the
/// last one holding the remainder.
///
/// The part size goes through [`effective_part_size`] first, so any size a user gives
/// yields a layout S3's part count allows. A 0-byte object becomes one empty part (a
/// valid multipart upload of an empty object), though [`needs_multipart`] never asks
/// for one.
///
/// # Errors
///
/// [`PartsError::ObjectTooLarge`] when the object exceeds [`MAX_OBJECT_BYTES`].
pub fn split(size_bytes: u64, part_size_bytes: u64) -> Result<Vec<PartRange>, PartsError> {
    if size_bytes > MAX_OBJECT_BYTES {
        return Err(PartsError::ObjectTooLarge { size_bytes });
    }
    if size_bytes == 0 {
        return Ok(vec![PartRange::at(1, 0, 0)]);
    }
    let part_size = effective_part_size(size_bytes, part_size_bytes);
    let mut parts = Vec::with_capacity(size_bytes.div_ceil(part_size) as usize);
    let mut offset = 0u64;
    // effective_part_size caps the count at 10,000, so part numbers fit a u32.
    for part_number in 1u32.. {
        if offset >= size_bytes {
            break;
        }
        let len = part_size.min(size_bytes - offset);
        parts.push(PartRange::at(part_number, offset, len));
        offset += len;
    }
    Ok(parts)
}

/// Whether a source version must be copied part by part rather than by one CopyObject.
///
/// Multipart sources always are, so that the copy keeps their ETag (CopyObject would
/// make them single-part); single-part sources are when larger than 5 GiB (CopyObject's
/// limit) or larger than `threshold_bytes` (`--multipart-threshold`, off when `None`).
pub fn needs_multipart(size_bytes: u64, is_multipart_source: bool, threshold_bytes: Option<u64>) -> bool {
    is_multipart_source
        || size_bytes > MAX_COPY_OBJECT_BYTES
        || threshold_bytes.is_some_and(|threshold| size_bytes > threshold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    fn ranges(parts: &[PartRange]) -> Vec<(u32, u64, u64)> {
        parts.iter().map(|p| (p.part_number, p.first, p.last)).collect()
    }

    #[test]
    fn constants_match_s3_limits() {
        assert_eq!(MAX_PART_SIZE_BYTES, MAX_COPY_OBJECT_BYTES);
        assert_eq!(MAX_OBJECT_BYTES, 53_687_091_200_000);
        assert_eq!(MIN_PART_SIZE_BYTES, 5_242_880);
    }

    #[test]
    fn layout_from_sizes_cases() {
        // (name, part sizes, expected (part number, first, last) per part)
        type Case<'a> = (&'a str, &'a [u64], Vec<(u32, u64, u64)>);
        let cases: &[Case] = &[
            ("one part", &[7], vec![(1, 0, 6)]),
            ("10/5/10", &[10, 5, 10], vec![(1, 0, 9), (2, 10, 14), (3, 15, 24)]),
            ("10/10/5", &[10, 10, 5], vec![(1, 0, 9), (2, 10, 19), (3, 20, 24)]),
            (
                "5 MiB parts and a 1-byte tail",
                &[5 * MIB, 5 * MIB, 1],
                vec![(1, 0, 5 * MIB - 1), (2, 5 * MIB, 10 * MIB - 1), (3, 10 * MIB, 10 * MIB)],
            ),
        ];
        for (name, sizes, want) in cases {
            let got = layout_from_sizes(sizes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(ranges(&got), *want, "{name}");
        }
    }

    #[test]
    fn layout_from_sizes_keeps_an_empty_last_part() {
        let got = layout_from_sizes(&[10, 0]).unwrap();
        assert_eq!(got[1].part_number, 2);
        assert!(got[1].is_empty());
        assert_eq!(got[1].header_value(), None);
        assert_eq!(got[0].header_value().as_deref(), Some("bytes=0-9"));

        let empty_object = layout_from_sizes(&[0]).unwrap();
        assert_eq!(empty_object.len(), 1);
        assert!(empty_object[0].is_empty());
    }

    #[test]
    fn layout_from_sizes_rejects() {
        let too_many = vec![1u64; MAX_PARTS as usize + 1];
        let cases: &[(&str, &[u64], PartsError, &str)] = &[
            ("no parts", &[], PartsError::NoParts, "multipart layout has no parts"),
            (
                "empty middle part",
                &[10, 0, 5],
                PartsError::EmptyPart {
                    part_number: 2,
                    count: 3,
                },
                "part 2 of 3 is empty, and only the last part may be",
            ),
            (
                "more than 10,000 parts",
                &too_many,
                PartsError::TooManyParts { count: 10_001 },
                "multipart layout has 10001 parts, more than the 10000 S3 allows",
            ),
            (
                "sizes overflow",
                &[u64::MAX, 1],
                PartsError::SizeOverflow,
                "multipart layout's part sizes add up to more than 2^64 bytes",
            ),
        ];
        for (name, sizes, want, message) in cases {
            let err = layout_from_sizes(sizes).unwrap_err();
            assert_eq!(&err, want, "{name}");
            assert_eq!(err.to_string(), *message, "{name}");
        }
        assert_eq!(
            layout_from_sizes(&vec![1u64; MAX_PARTS as usize]).unwrap().len(),
            10_000
        );
    }

    #[test]
    fn header_value_is_inclusive() {
        let parts = split(25, 10).unwrap();
        let headers: Vec<_> = parts.iter().filter_map(PartRange::header_value).collect();
        assert_eq!(headers, ["bytes=0-9", "bytes=10-19", "bytes=20-24"]);
    }

    #[test]
    fn default_part_size_cases() {
        let cases = [
            ("empty", 0, 64 * MIB),
            ("small", 1, 64 * MIB),
            ("10,000 parts of 64 MiB", 10_000 * 64 * MIB, 64 * MIB),
            ("one byte more", 10_000 * 64 * MIB + 1, 64 * MIB + 1),
            ("largest object", MAX_OBJECT_BYTES, 5 * GIB),
        ];
        for (name, size, want) in cases {
            assert_eq!(default_part_size(size), want, "{name}");
        }
    }

    #[test]
    fn split_cases() {
        // (name, size, asked part size, parts, first part's length, last part's length)
        let cases = [
            (
                "exactly 5 GiB, default",
                5 * GIB,
                default_part_size(5 * GIB),
                80,
                64 * MIB,
                64 * MIB,
            ),
            (
                "5 GiB + 1, default",
                5 * GIB + 1,
                default_part_size(5 * GIB + 1),
                81,
                64 * MIB,
                1,
            ),
            ("exactly 5 GiB in one part", 5 * GIB, 5 * GIB, 1, 5 * GIB, 5 * GIB),
            ("5 GiB + 1 in 5 GiB parts", 5 * GIB + 1, 5 * GIB, 2, 5 * GIB, 1),
            ("part size above 5 GiB is lowered", 6 * GIB, 10 * GIB, 2, 5 * GIB, GIB),
            ("part size equal to size", 100, 100, 1, 100, 100),
            ("part size above size", 100, 1000, 1, 100, 100),
            ("below S3 minimum is kept", 10 * MIB, MIB, 10, MIB, MIB),
            ("too small for 10,000 parts is raised", 100_000, 1, 10_000, 10, 10),
            ("raised to ceil(size / 10,000)", 20_001, 1, 6_667, 3, 3),
            ("part size 0 is raised", 10, 0, 10, 1, 1),
            (
                "largest object, default",
                MAX_OBJECT_BYTES,
                default_part_size(MAX_OBJECT_BYTES),
                10_000,
                5 * GIB,
                5 * GIB,
            ),
            (
                "largest object, 64 MiB asked",
                MAX_OBJECT_BYTES,
                64 * MIB,
                10_000,
                5 * GIB,
                5 * GIB,
            ),
        ];
        for (name, size, part_size, count, first_len, last_len) in cases {
            let parts = split(size, part_size).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parts.len(), count, "{name}");
            assert_eq!(parts[0].len_bytes, first_len, "{name}");
            assert_eq!(parts[parts.len() - 1].len_bytes, last_len, "{name}");
            assert_eq!(parts[parts.len() - 1].last, size - 1, "{name}");
        }
    }

    #[test]
    fn split_of_an_empty_object_is_one_empty_part() {
        let parts = split(0, 64 * MIB).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].part_number, 1);
        assert!(parts[0].is_empty());
        assert_eq!(parts[0].header_value(), None);
    }

    #[test]
    fn split_rejects_objects_beyond_the_largest() {
        let err = split(MAX_OBJECT_BYTES + 1, 5 * GIB).unwrap_err();
        assert_eq!(
            err,
            PartsError::ObjectTooLarge {
                size_bytes: MAX_OBJECT_BYTES + 1
            }
        );
        assert_eq!(
            err.to_string(),
            "object of 53687091200001 bytes is larger than 53687091200000 bytes, \
             the most 10,000 parts of 5 GiB can hold"
        );
    }

    #[test]
    fn below_s3_minimum_cases() {
        let cases = [(0, true), (5 * MIB - 1, true), (5 * MIB, false), (64 * MIB, false)];
        for (size, want) in cases {
            assert_eq!(below_s3_minimum(size), want, "{size}");
        }
    }

    #[test]
    fn needs_multipart_cases() {
        // (name, size, multipart source, threshold, expected)
        let cases = [
            ("small single-part", 10, false, None, false),
            ("multipart source keeps its layout", 10, true, None, true),
            ("exactly 5 GiB fits CopyObject", 5 * GIB, false, None, false),
            ("5 GiB + 1 does not", 5 * GIB + 1, false, None, true),
            ("at the threshold", 100 * MIB, false, Some(100 * MIB), false),
            ("above the threshold", 100 * MIB + 1, false, Some(100 * MIB), true),
            (
                "threshold above 5 GiB changes nothing",
                5 * GIB + 1,
                false,
                Some(10 * GIB),
                true,
            ),
            ("empty object, threshold 0", 0, false, Some(0), false),
        ];
        for (name, size, multipart, threshold, want) in cases {
            assert_eq!(needs_multipart(size, multipart, threshold), want, "{name}");
        }
    }

    /// Checks what every layout must satisfy: numbered from 1, contiguous from 0 to
    /// `size - 1`, at most 10,000 parts.
    fn check_contiguous(parts: &[PartRange], size: u64) -> Result<(), TestCaseError> {
        prop_assert!(!parts.is_empty());
        prop_assert!(parts.len() <= MAX_PARTS as usize);
        let mut next = 0u64;
        for (i, part) in parts.iter().enumerate() {
            prop_assert_eq!(part.part_number as usize, i + 1);
            prop_assert_eq!(part.first, next);
            if part.len_bytes > 0 {
                prop_assert_eq!(part.last - part.first + 1, part.len_bytes);
            }
            next += part.len_bytes;
        }
        prop_assert_eq!(next, size);
        // The last byte copied is size - 1 (an empty last part copies none).
        if let Some(last_copied) = parts.iter().rev().find(|p| !p.is_empty()) {
            prop_assert_eq!(last_copied.last, size - 1);
        } else {
            prop_assert_eq!(size, 0);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn split_is_contiguous_and_even(
            size in prop_oneof![0u64..=100_000, 0u64..=MAX_OBJECT_BYTES],
            part_size in prop_oneof![0u64..=1_000, 0u64..=6 * GIB],
        ) {
            let parts = split(size, part_size).unwrap();
            check_contiguous(&parts, size)?;
            let len = parts[0].len_bytes;
            prop_assert!(len <= MAX_PART_SIZE_BYTES);
            for part in &parts[..parts.len() - 1] {
                prop_assert_eq!(part.len_bytes, len);
            }
            prop_assert!(parts[parts.len() - 1].len_bytes <= len);
            if size > 0 {
                prop_assert!(parts.iter().all(|p| !p.is_empty()));
            }
        }

        #[test]
        fn layout_from_sizes_follows_the_sizes(
            mut sizes in proptest::collection::vec(1u64..=u64::from(u32::MAX), 1..200),
            empty_tail in any::<bool>(),
        ) {
            if empty_tail {
                sizes.push(0);
            }
            let parts = layout_from_sizes(&sizes).unwrap();
            check_contiguous(&parts, sizes.iter().sum())?;
            let lens: Vec<u64> = parts.iter().map(|p| p.len_bytes).collect();
            prop_assert_eq!(lens, sizes);
        }
    }
}
