//! The Cross-Region Replication rule model: plain rule types, the parser for the JSON
//! that `aws s3api get-bucket-replication` prints, and S3's matching of a key (and its
//! tags) against the rules towards one replica bucket.
//!
//! Reading GetBucketReplication belongs to the S3 module (it builds these types from
//! SDK types), reading a `--replication-config` file to its caller, and what a match
//! means (audit findings, storage class on restore) to `audit` and `plan`. Nothing here
//! does I/O.

use serde::Deserialize;

/// Whether a rule, or one of its features, is switched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RuleStatus {
    /// S3 applies it.
    Enabled,
    /// S3 ignores it.
    Disabled,
}

/// A bucket's replication configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// The IAM role S3 replicates with.
    pub role: Option<String>,
    /// The rules, in the order the configuration lists them.
    pub rules: Vec<Rule>,
}

/// One replication rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's `ID`.
    pub id: Option<String>,
    /// The rule's `Priority` (higher wins); V1 rules have none.
    pub priority: Option<i32>,
    /// Whether S3 applies the rule.
    pub status: RuleStatus,
    /// Which keys the rule covers (V2 rules); [`Filter::None`] for V1 rules.
    pub filter: Filter,
    /// A V1 rule's rule-level `Prefix` (`Some("")` when a rule without `Filter` has
    /// none); `None` for V2 rules, which have a `Filter` instead.
    pub legacy_prefix: Option<String>,
    /// Where the rule replicates to.
    pub destination: Destination,
    /// Whether delete markers are replicated: V2 rules say so in
    /// `DeleteMarkerReplication.Status`; V1 rules always replicate them.
    pub delete_marker_replication: bool,
    /// Whether SSE-KMS objects are replicated
    /// (`SourceSelectionCriteria.SseKmsEncryptedObjects.Status` is `Enabled`).
    pub replicate_sse_kms: bool,
}

/// A V2 rule's filter: which keys (and tags) it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// No condition: the whole bucket (`Filter: {}`, or a V1 rule).
    None,
    /// Keys starting with this prefix; an empty prefix covers every key.
    Prefix(String),
    /// Objects carrying this tag (key, value).
    Tag(String, String),
    /// Every condition at once: the prefix (if any) and every tag.
    And {
        /// The key prefix, if the `And` has one.
        prefix: Option<String>,
        /// Tags (key, value) the object must all carry.
        tags: Vec<(String, String)>,
    },
}

/// Where a rule replicates to, and how the replica is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The replica bucket's ARN (`arn:aws:s3:::name`), as the configuration gives it.
    pub bucket_arn: String,
    /// The replica bucket owner's account id.
    pub account: Option<String>,
    /// The storage class the rule writes replicas in; `None` keeps the source's class.
    pub storage_class: Option<String>,
    /// Whether replicas are owned by the destination account
    /// (`AccessControlTranslation.Owner` is `Destination`).
    pub owner_override: bool,
    /// The KMS key replicas are encrypted with
    /// (`EncryptionConfiguration.ReplicaKmsKeyID`).
    pub replica_kms_key_id: Option<String>,
}

/// Why a replication configuration cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The text is not JSON, or not a replication configuration.
    #[error("replication configuration in {origin} is malformed: {}", at_path(.path, .problem))]
    Malformed {
        /// Where the text came from (a file path).
        origin: String,
        /// The offending field, as `Rules[2].Destination.Bucket` (indexes from 0);
        /// `None` when the text is not JSON at all.
        path: Option<String>,
        /// What is wrong, with the line and column where the parser knows them.
        problem: String,
    },
}

/// Joins a field path and a problem for [`RulesError::Malformed`]'s message.
fn at_path(path: &Option<String>, problem: &str) -> String {
    match path {
        Some(path) => format!("{path}: {problem}"),
        None => problem.to_owned(),
    }
}

impl Filter {
    /// Whether an object with this key and these tags satisfies the filter.
    pub fn matches(&self, key: &str, tags: &[(String, String)]) -> bool {
        match self {
            Filter::None => true,
            Filter::Prefix(prefix) => key.starts_with(prefix.as_str()),
            Filter::Tag(tag_key, tag_value) => has_tag(tags, tag_key, tag_value),
            Filter::And { prefix, tags: wanted } => {
                prefix.as_deref().is_none_or(|p| key.starts_with(p)) && wanted.iter().all(|(k, v)| has_tag(tags, k, v))
            }
        }
    }

    /// Whether the filter looks at tags, so that matching needs the object's tags.
    pub fn uses_tags(&self) -> bool {
        match self {
            Filter::None | Filter::Prefix(_) => false,
            Filter::Tag(..) => true,
            Filter::And { tags, .. } => !tags.is_empty(),
        }
    }
}

/// Whether `tags` holds the tag `key` with exactly `value`.
fn has_tag(tags: &[(String, String)], key: &str, value: &str) -> bool {
    tags.iter().any(|(k, v)| k == key && v == value)
}

impl Rule {
    /// Whether S3 applies the rule.
    pub fn is_enabled(&self) -> bool {
        self.status == RuleStatus::Enabled
    }

    /// Whether this is a V1 rule (a rule-level `Prefix`, no `Filter`).
    pub fn is_v1(&self) -> bool {
        self.legacy_prefix.is_some()
    }

    /// The replica bucket's name, from the destination ARN.
    pub fn destination_bucket(&self) -> &str {
        bucket_name_from_arn(&self.destination.bucket_arn)
    }

    /// Whether the rule's conditions (legacy prefix and filter) cover this key and
    /// these tags, whatever the rule's status and destination.
    pub fn covers(&self, key: &str, tags: &[(String, String)]) -> bool {
        self.legacy_prefix.as_deref().is_none_or(|p| key.starts_with(p)) && self.filter.matches(key, tags)
    }
}

/// The bucket name in an S3 bucket ARN (`arn:aws:s3:::name` gives `name`); a bare name
/// is returned as it is.
///
/// Any partition is accepted (`arn:aws-cn:s3:::name`); for a resource with slashes (S3
/// on Outposts: `outpost/ID/bucket/name`) the name is the last segment.
pub fn bucket_name_from_arn(arn: &str) -> &str {
    if !arn.starts_with("arn:") {
        return arn;
    }
    // arn:partition:service:region:account:resource
    match arn.splitn(6, ':').nth(5) {
        Some(resource) => resource.rsplit('/').next().unwrap_or(resource),
        None => arn,
    }
}

/// Every rule whose destination is `replica_bucket` (a name or an ARN), enabled or not,
/// in the configuration's order.
///
/// Disabled rules are included so that callers can say why nothing protects a key;
/// filter with [`Rule::is_enabled`] for the rules S3 applies.
pub fn rules_towards<'a>(config: &'a ReplicationConfig, replica_bucket: &str) -> impl Iterator<Item = &'a Rule> {
    let replica = bucket_name_from_arn(replica_bucket);
    config
        .rules
        .iter()
        .filter(move |rule| rule.destination_bucket() == replica)
}

/// The rule that replicates `key` (with its `tags`) to `replica_bucket`, as S3 picks it;
/// `None` when no enabled rule towards that bucket covers the key.
///
/// Only enabled rules count: a disabled rule protects nothing. Among the rules that
/// cover the key, the highest `Priority` wins; a rule without a priority ranks below
/// any number, and a tie goes to the rule listed first (S3 refuses overlapping V1
/// rules, so for those the first is the only one).
pub fn in_scope<'a>(
    config: &'a ReplicationConfig,
    replica_bucket: &str,
    key: &str,
    tags: &[(String, String)],
) -> Option<&'a Rule> {
    let mut best: Option<&Rule> = None;
    for rule in rules_towards(config, replica_bucket) {
        if !rule.is_enabled() || !rule.covers(key, tags) {
            continue;
        }
        // Option's order puts None below every Some, as wanted.
        if best.is_none_or(|b| rule.priority > b.priority) {
            best = Some(rule);
        }
    }
    best
}

/// Whether any enabled rule towards `replica_bucket` filters on tags, so that
/// [`in_scope`] needs each object's tags (GetObjectTagging).
pub fn needs_tags(config: &ReplicationConfig, replica_bucket: &str) -> bool {
    rules_towards(config, replica_bucket).any(|rule| rule.is_enabled() && rule.filter.uses_tags())
}

/// A primary's rules as they bear on one replica bucket: what `plan` and `restore` ask of
/// them about a key. Tags are not known at planning time (a request per object), so the
/// questions here match with no tags: a tag-filtered rule counts only where said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRules {
    /// The primary's replication configuration.
    pub config: ReplicationConfig,
    /// The replica bucket rules must target to count.
    pub replica_bucket: String,
}

impl ReplicaRules {
    /// The rules of `config` towards `replica_bucket`.
    pub fn new(config: ReplicationConfig, replica_bucket: impl Into<String>) -> Self {
        ReplicaRules {
            config,
            replica_bucket: replica_bucket.into(),
        }
    }

    /// The enabled rule that replicates `key` (an object without tags) to the replica.
    pub fn covering(&self, key: &str) -> Option<&Rule> {
        in_scope(&self.config, &self.replica_bucket, key, &[])
    }

    /// Whether any enabled rule towards the replica exists.
    pub fn any_enabled(&self) -> bool {
        rules_towards(&self.config, &self.replica_bucket).any(Rule::is_enabled)
    }

    /// The rule under which a delete marker on `key` in the primary never reaches the
    /// replica, if one does: the covering rule when it does not replicate delete markers,
    /// or, where only a tag-filtered rule would cover the key's objects, that rule (a
    /// delete marker has no tags, and S3 does not replicate delete markers under
    /// tag-filtered rules at all). `None` where delete markers replicate, or where no rule
    /// covers the key (then nothing of it replicates, which audit reports as
    /// `unprotected`).
    pub fn unreplicated_deletes(&self, key: &str) -> Option<&Rule> {
        if let Some(rule) = self.covering(key) {
            return (!rule.delete_marker_replication).then_some(rule);
        }
        let mut best: Option<&Rule> = None;
        for rule in rules_towards(&self.config, &self.replica_bucket) {
            let prefix_covers = match &rule.filter {
                Filter::Tag(..) => true,
                Filter::And { prefix, tags } if !tags.is_empty() => {
                    prefix.as_deref().is_none_or(|p| key.starts_with(p))
                }
                _ => false,
            };
            if rule.is_enabled() && prefix_covers && best.is_none_or(|b| rule.priority > b.priority) {
                best = Some(rule);
            }
        }
        best
    }

    /// The covering rule, where it set a destination storage class for the replicas.
    pub fn sets_storage_class(&self, key: &str) -> Option<&Rule> {
        self.covering(key).filter(|r| r.destination.storage_class.is_some())
    }

    /// The covering rule, where it handed the replicas to the replica bucket's owner
    /// (`AccessControlTranslation`): the replica's ACLs are then not the primary's.
    pub fn overrides_owner(&self, key: &str) -> Option<&Rule> {
        self.covering(key).filter(|r| r.destination.owner_override)
    }
}

/// A rule's id for people: `(no id)` where the rule has none.
pub fn rule_name(rule: &Rule) -> &str {
    rule.id.as_deref().filter(|id| !id.is_empty()).unwrap_or("(no id)")
}

/// Parses the JSON that `aws s3api get-bucket-replication` prints: either
/// `{"ReplicationConfiguration": {...}}` or the inner object alone. `origin` names the
/// text's source (a file path) in errors.
///
/// Fields are spelled as AWS spells them; fields this model does not know are ignored,
/// since AWS adds new ones.
///
/// # Errors
///
/// [`RulesError::Malformed`], one for the whole text, naming `origin` and the first
/// offending field: text that is not JSON, a missing or mistyped field, a `Status` other
/// than `Enabled` or `Disabled`, a `Filter` naming more than one of `Prefix`, `Tag` and
/// `And`, a rule with both a `Filter` and a non-empty rule-level `Prefix`, an empty
/// `Destination.Bucket`.
pub fn parse_json(text: &str, origin: &str) -> Result<ReplicationConfig, RulesError> {
    let malformed = |path: Option<String>, problem: String| RulesError::Malformed {
        origin: origin.to_owned(),
        path,
        problem,
    };
    // A first pass finds syntax errors and which of the two forms the text has.
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| malformed(None, problem_of(&e)))?;
    // serde would also read a struct from an array of its fields: refuse that at the top.
    let Some(object) = value.as_object() else {
        return Err(malformed(None, "expected a JSON object".to_owned()));
    };
    let wrapped = object.contains_key(OUTER_KEY);
    // The second pass reads the text itself again, so that errors carry line and column.
    let raw = if wrapped {
        deserialize::<raw::Outer>(text).map(|outer| outer.config)
    } else {
        deserialize::<raw::ReplicationConfiguration>(text)
    }
    .map_err(|(path, problem)| malformed(path, problem))?;
    let base = if wrapped {
        format!("{OUTER_KEY}.")
    } else {
        String::new()
    };
    raw.into_config(&base)
        .map_err(|(path, problem)| malformed(Some(path), problem))
}

/// The key `aws s3api get-bucket-replication` wraps the configuration in.
const OUTER_KEY: &str = "ReplicationConfiguration";

/// Deserializes `text`, reporting the failing field's path and the problem.
fn deserialize<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, (Option<String>, String)> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let mut path = (path != ".").then_some(path);
        let mut problem = problem_of(&inner);
        // serde says "missing field `Bucket`" at the enclosing object; naming the
        // field itself in the path reads better: `Destination.Bucket: missing`.
        if let Some(field) = missing_field(&inner) {
            path = Some(match path {
                Some(p) => format!("{p}.{field}"),
                None => field.to_owned(),
            });
            problem = with_position("missing".to_owned(), &inner);
        }
        (path, problem)
    })
}

/// serde_json's message with its position as `(line L, column C)`.
fn problem_of(err: &serde_json::Error) -> String {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    with_position(message, err)
}

/// Appends serde_json's position (when it has one) to `message`.
fn with_position(message: String, err: &serde_json::Error) -> String {
    if err.line() == 0 {
        message
    } else {
        format!("{message} (line {}, column {})", err.line(), err.column())
    }
}

/// The field named by a "missing field" error, if that is what `err` is.
fn missing_field(err: &serde_json::Error) -> Option<String> {
    let full = err.to_string();
    let rest = full.strip_prefix("missing field `")?;
    let (field, _) = rest.split_once('`')?;
    Some(field.to_owned())
}

/// The configuration as AWS spells it, for serde; named as AWS names the elements,
/// since serde puts the type names into its messages.
mod raw {
    use super::RuleStatus;
    use serde::Deserialize;

    /// `{"ReplicationConfiguration": {...}}`, as `aws s3api get-bucket-replication` prints it.
    #[derive(Deserialize)]
    pub(super) struct Outer {
        #[serde(rename = "ReplicationConfiguration")]
        pub(super) config: ReplicationConfiguration,
    }

    /// The configuration as AWS spells it.
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct ReplicationConfiguration {
        pub(super) role: Option<String>,
        pub(super) rules: Vec<Rule>,
    }

    /// One rule as AWS spells it.
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct Rule {
        #[serde(rename = "ID")]
        pub(super) id: Option<String>,
        pub(super) priority: Option<i32>,
        pub(super) status: RuleStatus,
        pub(super) filter: Option<Filter>,
        pub(super) prefix: Option<String>,
        pub(super) destination: Destination,
        pub(super) delete_marker_replication: Option<StatusElement>,
        pub(super) source_selection_criteria: Option<SourceSelectionCriteria>,
    }

    /// An element holding only a `Status`.
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct StatusElement {
        pub(super) status: RuleStatus,
    }

    /// `SourceSelectionCriteria`.
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct SourceSelectionCriteria {
        pub(super) sse_kms_encrypted_objects: Option<StatusElement>,
    }

    /// `Filter`: at most one of its three members.
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct Filter {
        pub(super) prefix: Option<String>,
        pub(super) tag: Option<Tag>,
        pub(super) and: Option<And>,
    }

    /// A tag as AWS spells it.
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct Tag {
        pub(super) key: String,
        pub(super) value: String,
    }

    /// `Filter.And`.
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct And {
        pub(super) prefix: Option<String>,
        pub(super) tags: Option<Vec<Tag>>,
    }

    /// `Destination`.
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct Destination {
        pub(super) bucket: String,
        pub(super) account: Option<String>,
        pub(super) storage_class: Option<String>,
        pub(super) access_control_translation: Option<AccessControlTranslation>,
        pub(super) encryption_configuration: Option<EncryptionConfiguration>,
    }

    /// `Destination.AccessControlTranslation`.
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct AccessControlTranslation {
        pub(super) owner: String,
    }

    /// `Destination.EncryptionConfiguration`.
    #[derive(Deserialize)]
    pub(super) struct EncryptionConfiguration {
        #[serde(rename = "ReplicaKmsKeyID")]
        pub(super) replica_kms_key_id: Option<String>,
    }
}

/// A path and a problem, for checks serde cannot make.
type Invalid = (String, String);

impl raw::ReplicationConfiguration {
    /// Checks what serde cannot and builds the model; `base` prefixes error paths.
    fn into_config(self, base: &str) -> Result<ReplicationConfig, Invalid> {
        let rules = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| rule.into_rule(&format!("{base}Rules[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(ReplicationConfig { role: self.role, rules })
    }
}

impl raw::Rule {
    /// Checks the rule and builds it; `path` names it in errors.
    fn into_rule(self, path: &str) -> Result<Rule, Invalid> {
        let (filter, legacy_prefix) = match (self.filter, self.prefix) {
            // Without a Filter the rule is V1: its Prefix (or none) decides alone.
            (None, prefix) => (Filter::None, Some(prefix.unwrap_or_default())),
            // An empty rule-level Prefix beside a Filter restricts nothing; some tools
            // print one, so it is tolerated.
            (Some(filter), None) => (filter.into_filter(path)?, None),
            (Some(filter), Some(prefix)) if prefix.is_empty() => (filter.into_filter(path)?, None),
            (Some(_), Some(_)) => {
                return Err((path.to_owned(), "has both a Filter and a rule-level Prefix".to_owned()));
            }
        };
        let delete_marker_replication = match (&legacy_prefix, self.delete_marker_replication) {
            // V1 rules replicate delete markers; they have no setting for it.
            (Some(_), _) => true,
            (None, Some(d)) => d.status == RuleStatus::Enabled,
            (None, None) => false,
        };
        let replicate_sse_kms = self
            .source_selection_criteria
            .and_then(|c| c.sse_kms_encrypted_objects)
            .is_some_and(|s| s.status == RuleStatus::Enabled);
        let d = self.destination;
        if d.bucket.is_empty() {
            return Err((format!("{path}.Destination.Bucket"), "empty".to_owned()));
        }
        Ok(Rule {
            id: self.id,
            priority: self.priority,
            status: self.status,
            filter,
            legacy_prefix,
            destination: Destination {
                bucket_arn: d.bucket,
                account: d.account,
                storage_class: d.storage_class,
                owner_override: d.access_control_translation.is_some_and(|a| a.owner == "Destination"),
                replica_kms_key_id: d.encryption_configuration.and_then(|e| e.replica_kms_key_id),
            },
            delete_marker_replication,
            replicate_sse_kms,
        })
    }
}

impl raw::Filter {
    /// Builds the filter; `path` names the rule in errors.
    fn into_filter(self, path: &str) -> Result<Filter, Invalid> {
        match (self.prefix, self.tag, self.and) {
            (None, None, None) => Ok(Filter::None),
            (Some(prefix), None, None) => Ok(Filter::Prefix(prefix)),
            (None, Some(tag), None) => Ok(Filter::Tag(tag.key, tag.value)),
            (None, None, Some(and)) => Ok(Filter::And {
                prefix: and.prefix,
                tags: and
                    .tags
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| (t.key, t.value))
                    .collect(),
            }),
            _ => Err((
                format!("{path}.Filter"),
                "names more than one of Prefix, Tag and And".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLICA_ARN: &str = "arn:aws:s3:::replica";

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn rule(id: &str, priority: Option<i32>, filter: Filter) -> Rule {
        Rule {
            id: Some(id.to_owned()),
            priority,
            status: RuleStatus::Enabled,
            filter,
            legacy_prefix: None,
            destination: Destination {
                bucket_arn: REPLICA_ARN.to_owned(),
                account: None,
                storage_class: None,
                owner_override: false,
                replica_kms_key_id: None,
            },
            delete_marker_replication: false,
            replicate_sse_kms: false,
        }
    }

    fn prefix(p: &str) -> Filter {
        Filter::Prefix(p.to_owned())
    }

    fn config(rules: Vec<Rule>) -> ReplicationConfig {
        ReplicationConfig { role: None, rules }
    }

    fn scope_id(config: &ReplicationConfig, key: &str, tags: &[(String, String)]) -> Option<String> {
        in_scope(config, "replica", key, tags).and_then(|r| r.id.clone())
    }

    #[test]
    fn bucket_name_from_arn_cases() {
        let cases = [
            ("arn:aws:s3:::replica", "replica"),
            ("arn:aws-cn:s3:::my.bucket", "my.bucket"),
            ("replica", "replica"),
            ("", ""),
            (
                "arn:aws:s3-outposts:eu-west-1:123456789012:outpost/op-1/bucket/ob",
                "ob",
            ),
            ("arn:broken", "arn:broken"),
        ];
        for (arn, want) in cases {
            assert_eq!(bucket_name_from_arn(arn), want, "{arn}");
        }
    }

    #[test]
    fn in_scope_priority_cases() {
        let cfg = config(vec![
            rule("low", Some(1), prefix("")),
            rule("logs", Some(5), prefix("logs/")),
            rule("logs-old", Some(3), prefix("logs/old/")),
        ]);
        let cases = [
            ("only the whole-bucket rule", "data/a", Some("low")),
            ("higher priority wins", "logs/a", Some("logs")),
            (
                "higher priority wins over the longer prefix",
                "logs/old/a",
                Some("logs"),
            ),
        ];
        for (name, key, want) in cases {
            assert_eq!(scope_id(&cfg, key, &[]).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn in_scope_ties_and_missing_priorities() {
        let tie = config(vec![rule("a", Some(2), prefix("")), rule("b", Some(2), prefix(""))]);
        assert_eq!(scope_id(&tie, "k", &[]).as_deref(), Some("a"));
        let none_below_some = config(vec![rule("a", None, prefix("")), rule("b", Some(-1), prefix(""))]);
        assert_eq!(scope_id(&none_below_some, "k", &[]).as_deref(), Some("b"));
        let no_priorities = config(vec![rule("a", None, prefix("x")), rule("b", None, prefix(""))]);
        assert_eq!(scope_id(&no_priorities, "x1", &[]).as_deref(), Some("a"));
    }

    #[test]
    fn in_scope_filter_cases() {
        let tag = Filter::Tag("class".to_owned(), "keep".to_owned());
        let and = Filter::And {
            prefix: Some("docs/".to_owned()),
            tags: tags(&[("class", "keep"), ("team", "a")]),
        };
        let and_no_prefix = Filter::And {
            prefix: None,
            tags: tags(&[("team", "a")]),
        };
        // (name, filter, key, tags, covered)
        let cases = [
            ("no filter", Filter::None, "any", tags(&[]), true),
            ("empty prefix", prefix(""), "any", tags(&[]), true),
            ("prefix matches", prefix("a/"), "a/b", tags(&[]), true),
            (
                "prefix is not a substring match",
                prefix("a/"),
                "b/a/",
                tags(&[]),
                false,
            ),
            ("prefix is case-sensitive", prefix("A/"), "a/b", tags(&[]), false),
            (
                "tag present",
                tag.clone(),
                "k",
                tags(&[("x", "y"), ("class", "keep")]),
                true,
            ),
            ("tag absent", tag.clone(), "k", tags(&[("x", "y")]), false),
            (
                "tag with another value",
                tag.clone(),
                "k",
                tags(&[("class", "drop")]),
                false,
            ),
            ("tag value is not a key", tag, "k", tags(&[("keep", "class")]), false),
            (
                "and: all hold",
                and.clone(),
                "docs/a",
                tags(&[("team", "a"), ("class", "keep")]),
                true,
            ),
            (
                "and: prefix fails",
                and.clone(),
                "img/a",
                tags(&[("team", "a"), ("class", "keep")]),
                false,
            ),
            (
                "and: one tag missing",
                and.clone(),
                "docs/a",
                tags(&[("class", "keep")]),
                false,
            ),
            (
                "and: one tag wrong",
                and,
                "docs/a",
                tags(&[("team", "b"), ("class", "keep")]),
                false,
            ),
            (
                "and without prefix",
                and_no_prefix.clone(),
                "any",
                tags(&[("team", "a")]),
                true,
            ),
            ("and without prefix, no tags", and_no_prefix, "any", tags(&[]), false),
        ];
        for (name, filter, key, object_tags, covered) in cases {
            let cfg = config(vec![rule("r", Some(1), filter)]);
            assert_eq!(
                in_scope(&cfg, "replica", key, &object_tags).is_some(),
                covered,
                "{name}"
            );
        }
    }

    #[test]
    fn in_scope_ignores_disabled_rules_and_other_buckets() {
        let mut disabled = rule("disabled", Some(9), prefix(""));
        disabled.status = RuleStatus::Disabled;
        let mut elsewhere = rule("elsewhere", Some(8), prefix(""));
        elsewhere.destination.bucket_arn = "arn:aws:s3:::other".to_owned();
        let narrow = rule("narrow", Some(1), prefix("keep/"));
        let cfg = config(vec![disabled, elsewhere, narrow]);

        assert_eq!(scope_id(&cfg, "keep/a", &[]).as_deref(), Some("narrow"));
        assert_eq!(scope_id(&cfg, "drop/a", &[]), None);
        // The replica may be named by its ARN as well.
        assert!(in_scope(&cfg, REPLICA_ARN, "keep/a", &[]).is_some());
        assert_eq!(
            in_scope(&cfg, "other", "drop/a", &[]).and_then(|r| r.id.as_deref()),
            Some("elsewhere")
        );
        let towards: Vec<_> = rules_towards(&cfg, "replica").filter_map(|r| r.id.as_deref()).collect();
        assert_eq!(towards, ["disabled", "narrow"]);
        assert_eq!(in_scope(&cfg, "nowhere", "keep/a", &[]), None);
    }

    #[test]
    fn in_scope_v1_legacy_prefix() {
        let mut v1 = rule("v1", None, Filter::None);
        v1.legacy_prefix = Some("photos/".to_owned());
        let cfg = config(vec![v1]);
        assert!(cfg.rules[0].is_v1());
        assert_eq!(scope_id(&cfg, "photos/a.jpg", &[]).as_deref(), Some("v1"));
        assert_eq!(scope_id(&cfg, "videos/a.mp4", &[]), None);
    }

    #[test]
    fn needs_tags_cases() {
        let tag = || Filter::Tag("k".to_owned(), "v".to_owned());
        let mut disabled_tag = rule("d", Some(2), tag());
        disabled_tag.status = RuleStatus::Disabled;
        let mut elsewhere_tag = rule("e", Some(3), tag());
        elsewhere_tag.destination.bucket_arn = "other".to_owned();
        let and_prefix_only = Filter::And {
            prefix: Some("p/".to_owned()),
            tags: vec![],
        };
        let cases = [
            ("prefix only", config(vec![rule("p", Some(1), prefix("a"))]), false),
            ("tag rule", config(vec![rule("t", Some(1), tag())]), true),
            (
                "and with tags",
                config(vec![rule(
                    "a",
                    Some(1),
                    Filter::And {
                        prefix: None,
                        tags: tags(&[("k", "v")]),
                    },
                )]),
                true,
            ),
            (
                "and without tags",
                config(vec![rule("a", Some(1), and_prefix_only)]),
                false,
            ),
            ("disabled tag rule", config(vec![disabled_tag]), false),
            ("tag rule towards another bucket", config(vec![elsewhere_tag]), false),
        ];
        for (name, cfg, want) in cases {
            assert_eq!(needs_tags(&cfg, "replica"), want, "{name}");
        }
    }

    const FULL_INNER: &str = r#"{
        "Role": "arn:aws:iam::123456789012:role/crr",
        "Rules": [
            {
                "ID": "docs",
                "Priority": 2,
                "Status": "Enabled",
                "Filter": {"And": {"Prefix": "docs/", "Tags": [{"Key": "class", "Value": "keep"}]}},
                "Destination": {
                    "Bucket": "arn:aws:s3:::replica",
                    "Account": "210987654321",
                    "StorageClass": "STANDARD_IA",
                    "AccessControlTranslation": {"Owner": "Destination"},
                    "EncryptionConfiguration": {"ReplicaKmsKeyID": "arn:aws:kms:eu-west-1:210987654321:key/k"},
                    "ReplicationTime": {"Status": "Enabled", "Time": {"Minutes": 15}},
                    "Metrics": {"Status": "Enabled"}
                },
                "DeleteMarkerReplication": {"Status": "Enabled"},
                "SourceSelectionCriteria": {
                    "SseKmsEncryptedObjects": {"Status": "Enabled"},
                    "ReplicaModifications": {"Status": "Disabled"}
                },
                "ExistingObjectReplication": {"Status": "Disabled"}
            },
            {
                "ID": "whole",
                "Priority": 1,
                "Status": "Disabled",
                "Filter": {},
                "Destination": {"Bucket": "arn:aws:s3:::replica"},
                "DeleteMarkerReplication": {"Status": "Disabled"}
            },
            {
                "ID": "tagged",
                "Priority": 0,
                "Status": "Enabled",
                "Filter": {"Tag": {"Key": "crr", "Value": "yes"}},
                "Destination": {"Bucket": "other"}
            },
            {
                "ID": "prefix",
                "Priority": 3,
                "Status": "Enabled",
                "Filter": {"Prefix": "logs/"},
                "Destination": {"Bucket": "arn:aws:s3:::replica"}
            }
        ]
    }"#;

    fn expected_full() -> ReplicationConfig {
        let dest = |bucket: &str| Destination {
            bucket_arn: bucket.to_owned(),
            account: None,
            storage_class: None,
            owner_override: false,
            replica_kms_key_id: None,
        };
        ReplicationConfig {
            role: Some("arn:aws:iam::123456789012:role/crr".to_owned()),
            rules: vec![
                Rule {
                    id: Some("docs".to_owned()),
                    priority: Some(2),
                    status: RuleStatus::Enabled,
                    filter: Filter::And {
                        prefix: Some("docs/".to_owned()),
                        tags: tags(&[("class", "keep")]),
                    },
                    legacy_prefix: None,
                    destination: Destination {
                        bucket_arn: "arn:aws:s3:::replica".to_owned(),
                        account: Some("210987654321".to_owned()),
                        storage_class: Some("STANDARD_IA".to_owned()),
                        owner_override: true,
                        replica_kms_key_id: Some("arn:aws:kms:eu-west-1:210987654321:key/k".to_owned()),
                    },
                    delete_marker_replication: true,
                    replicate_sse_kms: true,
                },
                Rule {
                    id: Some("whole".to_owned()),
                    priority: Some(1),
                    status: RuleStatus::Disabled,
                    filter: Filter::None,
                    legacy_prefix: None,
                    destination: dest("arn:aws:s3:::replica"),
                    delete_marker_replication: false,
                    replicate_sse_kms: false,
                },
                Rule {
                    id: Some("tagged".to_owned()),
                    priority: Some(0),
                    status: RuleStatus::Enabled,
                    filter: Filter::Tag("crr".to_owned(), "yes".to_owned()),
                    legacy_prefix: None,
                    destination: dest("other"),
                    delete_marker_replication: false,
                    replicate_sse_kms: false,
                },
                Rule {
                    id: Some("prefix".to_owned()),
                    priority: Some(3),
                    status: RuleStatus::Enabled,
                    filter: Filter::Prefix("logs/".to_owned()),
                    legacy_prefix: None,
                    destination: dest("arn:aws:s3:::replica"),
                    delete_marker_replication: false,
                    replicate_sse_kms: false,
                },
            ],
        }
    }

    #[test]
    fn parse_json_both_forms() {
        let wrapped = format!(r#"{{"ReplicationConfiguration": {FULL_INNER}}}"#);
        for (name, text) in [("inner object", FULL_INNER.to_owned()), ("wrapped", wrapped)] {
            let got = parse_json(&text, "rules.json").unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, expected_full(), "{name}");
        }
    }

    #[test]
    fn parse_json_then_match() {
        let cfg = parse_json(FULL_INNER, "rules.json").unwrap();
        let keep = tags(&[("class", "keep")]);
        assert_eq!(scope_id(&cfg, "docs/a", &keep).as_deref(), Some("docs"));
        assert_eq!(scope_id(&cfg, "docs/a", &[]), None);
        assert_eq!(scope_id(&cfg, "logs/a", &[]).as_deref(), Some("prefix"));
        assert!(needs_tags(&cfg, "replica"));
    }

    #[test]
    fn parse_json_v1_rules() {
        let text = r#"{"ReplicationConfiguration": {"Role": "r", "Rules": [
            {"ID": "v1", "Prefix": "photos/", "Status": "Enabled",
             "Destination": {"Bucket": "arn:aws:s3:::replica"}},
            {"ID": "v1-all", "Status": "Enabled",
             "Destination": {"Bucket": "arn:aws:s3:::replica2"}}
        ]}}"#;
        let cfg = parse_json(text, "v1.json").unwrap();
        let v1 = &cfg.rules[0];
        assert_eq!(v1.legacy_prefix.as_deref(), Some("photos/"));
        assert_eq!(v1.filter, Filter::None);
        assert!(v1.is_v1());
        assert!(v1.delete_marker_replication);
        assert_eq!(v1.priority, None);
        assert_eq!(scope_id(&cfg, "photos/x", &[]).as_deref(), Some("v1"));
        assert_eq!(scope_id(&cfg, "other/x", &[]), None);
        assert_eq!(cfg.rules[1].legacy_prefix.as_deref(), Some(""));
        assert!(in_scope(&cfg, "replica2", "anything", &[]).is_some());
    }

    #[test]
    fn parse_json_tolerates_an_empty_rule_prefix_beside_a_filter() {
        let text = r#"{"Rules": [{"Status": "Enabled", "Prefix": "",
            "Filter": {"Prefix": ""}, "Destination": {"Bucket": "b"},
            "DeleteMarkerReplication": {"Status": "Disabled"}}]}"#;
        let cfg = parse_json(text, "moto.json").unwrap();
        assert!(!cfg.rules[0].is_v1());
        assert_eq!(cfg.rules[0].filter, prefix(""));
        assert!(!cfg.rules[0].delete_marker_replication);
    }

    #[test]
    fn parse_json_errors() {
        let cases = [
            (
                "not JSON",
                r#"{"Rules": [}"#,
                "replication configuration in rules.json is malformed: \
                 expected value (line 1, column 12)",
            ),
            (
                "empty text",
                "",
                "replication configuration in rules.json is malformed: \
                 EOF while parsing a value (line 1, column 0)",
            ),
            (
                "missing Destination.Bucket",
                "{\"Rules\": [\n{\"Status\": \"Enabled\", \"Destination\": {\"Bucket\": \"b\"}},\n\
                 {\"Status\": \"Enabled\", \"Destination\": {}}\n]}",
                "replication configuration in rules.json is malformed: \
                 Rules[1].Destination.Bucket: missing (line 3, column 39)",
            ),
            (
                "missing Destination.Bucket, wrapped",
                r#"{"ReplicationConfiguration": {"Rules": [{"Status": "Enabled", "Destination": {"Account": "1"}}]}}"#,
                "replication configuration in rules.json is malformed: \
                 ReplicationConfiguration.Rules[0].Destination.Bucket: missing (line 1, column 93)",
            ),
            (
                "status not Enabled or Disabled",
                r#"{"Rules": [{"Status": "enabled", "Destination": {"Bucket": "b"}}]}"#,
                "replication configuration in rules.json is malformed: \
                 Rules[0].Status: unknown variant `enabled`, expected `Enabled` or `Disabled` \
                 (line 1, column 31)",
            ),
            (
                "delete marker status not Enabled or Disabled",
                r#"{"Rules": [{"Status": "Enabled", "Destination": {"Bucket": "b"},
                    "DeleteMarkerReplication": {"Status": "On"}}]}"#,
                "replication configuration in rules.json is malformed: \
                 Rules[0].DeleteMarkerReplication.Status: unknown variant `On`, \
                 expected `Enabled` or `Disabled` (line 2, column 62)",
            ),
            (
                "missing Rules",
                r#"{"Role": "r"}"#,
                "replication configuration in rules.json is malformed: \
                 Rules: missing (line 1, column 13)",
            ),
            (
                "not an object",
                "[]",
                "replication configuration in rules.json is malformed: \
                 expected a JSON object",
            ),
            (
                "priority not a number",
                r#"{"Rules": [{"Priority": "1", "Status": "Enabled", "Destination": {"Bucket": "b"}}]}"#,
                "replication configuration in rules.json is malformed: \
                 Rules[0].Priority: invalid type: string \"1\", expected i32 (line 1, column 27)",
            ),
            (
                "empty bucket",
                r#"{"Rules": [{"Status": "Enabled", "Destination": {"Bucket": ""}}]}"#,
                "replication configuration in rules.json is malformed: \
                 Rules[0].Destination.Bucket: empty",
            ),
            (
                "filter with two members",
                r#"{"ReplicationConfiguration": {"Rules": [{"Status": "Enabled",
                    "Filter": {"Prefix": "a", "Tag": {"Key": "k", "Value": "v"}},
                    "Destination": {"Bucket": "b"}}]}}"#,
                "replication configuration in rules.json is malformed: \
                 ReplicationConfiguration.Rules[0].Filter: names more than one of Prefix, Tag and And",
            ),
            (
                "filter and a rule-level prefix",
                r#"{"Rules": [{"Status": "Enabled", "Prefix": "a/", "Filter": {},
                    "Destination": {"Bucket": "b"}}]}"#,
                "replication configuration in rules.json is malformed: \
                 Rules[0]: has both a Filter and a rule-level Prefix",
            ),
        ];
        let mut wrong = Vec::new();
        for (name, text, message) in cases {
            let err = parse_json(text, "rules.json").unwrap_err();
            if err.to_string() != message {
                wrong.push(format!("{name}:\n  got  {err}\n  want {message}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
