//! What the primary's replication rules mean for a plan before it runs: the storage
//! classes a restore writes, the versions whose ACL grants an owner override keeps out,
//! and the writes the primary will replicate back to the replica.
//!
//! Pure: it reads planned actions and the policies a restore decided; `plan` and
//! `restore` print its lines and put its figures into their summaries.

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::{ActionKind, KindTotals, PlannedAction};
use crate::report::human_bytes;
use crate::restore::{AclPolicy, StorageClassPolicy};
use crate::rules::{ReplicaRules, rule_name};

/// The rules' effect on one plan's writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesImpact {
    /// Copies per storage class the restore sends.
    pub classes: BTreeMap<String, KindTotals>,
    /// Copies written STANDARD because their rule set the replica's class.
    pub class_by_rule: KindTotals,
    /// Copies whose ACL grants are not copied because their rule overrides the owner.
    pub owner_override: KindTotals,
    /// The rules that override the owner of those copies.
    pub owner_override_rules: BTreeSet<String>,
    /// Writes the primary's enabled rules towards the replica will replicate back.
    pub rereplicated: KindTotals,
    /// The rules that will replicate them.
    pub rereplicate_rules: BTreeSet<String>,
    /// Whether tag-filtered rules exist towards the replica: the plan does not read tags,
    /// so the counts above leave those rules out.
    pub tag_rules: bool,
}

fn add(t: &mut KindTotals, bytes: u64) {
    t.objects += 1;
    t.bytes += bytes;
}

impl RulesImpact {
    /// An empty tally for a plan under `rules` (where known).
    pub fn new(rules: Option<&ReplicaRules>) -> Self {
        RulesImpact {
            tag_rules: rules.is_some_and(|r| crate::rules::needs_tags(&r.config, &r.replica_bucket)),
            ..RulesImpact::default()
        }
    }

    /// Adds one planned action, as a restore with these policies would write it.
    pub fn add(
        &mut self,
        action: &PlannedAction,
        classes: &StorageClassPolicy,
        acls: &AclPolicy,
        rules: Option<&ReplicaRules>,
    ) {
        if !action.action.writes() {
            return;
        }
        let bytes = action.size_bytes.unwrap_or(0);
        if matches!(action.action, ActionKind::Copy | ActionKind::MultipartCopy) {
            let class = classes.class_for(&action.key, action.storage_class.as_deref());
            add(self.classes.entry(class).or_default(), bytes);
            if let StorageClassPolicy::Rules(r) = classes
                && r.sets_storage_class(&action.key).is_some()
            {
                add(&mut self.class_by_rule, bytes);
            }
            if let AclPolicy::ExceptOwnerOverride(r) = acls
                && let Some(rule) = r.overrides_owner(&action.key)
            {
                add(&mut self.owner_override, bytes);
                self.owner_override_rules.insert(rule_name(rule).to_owned());
            }
        }
        let Some(rules) = rules else { return };
        // What the restore writes lands under the primary's keys: the rule covering the
        // destination key replicates it (a delete marker only where the rule says so).
        if let Some(rule) = rules.covering(&action.dest_key)
            && (!action.is_delete_marker || rule.delete_marker_replication)
        {
            add(&mut self.rereplicated, bytes);
            self.rereplicate_rules.insert(rule_name(rule).to_owned());
        }
    }

    /// Notes for people (stderr), one per finding; none where the rules change nothing.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.class_by_rule.objects > 0 {
            let mix: Vec<String> = self
                .classes
                .iter()
                .map(|(class, t)| format!("{class} {} ({})", t.objects, human_bytes(t.bytes)))
                .collect();
            out.push(format!(
                "storage classes written: {}; {} copies go to STANDARD because their replication rule chose the replica's class (--storage-class overrides)",
                mix.join(", "),
                self.class_by_rule.objects
            ));
        }
        if self.owner_override.objects > 0 {
            out.push(format!(
                "ACLs not copied for {} versions ({}): rule {} gives the replicas to the replica bucket's owner, so their ACLs are not the primary's (--acls copy restores them)",
                self.owner_override.objects,
                human_bytes(self.owner_override.bytes),
                join(&self.owner_override_rules)
            ));
        }
        out
    }

    /// The warning a restore gives before it writes, where the primary will replicate its
    /// writes back to the replica.
    pub fn rereplication_warning(&self, replica_bucket: &str) -> Option<String> {
        (self.rereplicated.objects > 0).then(|| {
            format!(
                "the primary replicates to {replica_bucket} (rule {}): {} {} writes of this restore ({}) will be replicated back there as new versions, doubling their storage and transfer; pause the rule during the restore (runbooks/failback.md)",
                join(&self.rereplicate_rules),
                // Tags are not read: objects a tag-filtered rule covers come on top.
                if self.tag_rules { "at least" } else { "the" },
                self.rereplicated.objects,
                human_bytes(self.rereplicated.bytes)
            )
        })
    }

    /// The figures for `summary.json`.
    pub fn to_json(&self) -> serde_json::Value {
        let totals = |t: &KindTotals| serde_json::json!({"objects": t.objects, "bytes": t.bytes});
        serde_json::json!({
            "storage_classes": self.classes.iter().map(|(c, t)| (c.clone(), totals(t))).collect::<serde_json::Map<_, _>>(),
            "standard_by_rule": totals(&self.class_by_rule),
            "acls_skipped_owner_override": totals(&self.owner_override),
            "rereplicated": totals(&self.rereplicated),
            "rereplicate_rules": self.rereplicate_rules.iter().collect::<Vec<_>>(),
        })
    }
}

fn join(names: &BTreeSet<String>) -> String {
    names.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::rules::{Destination, Filter, ReplicationConfig, Rule, RuleStatus};

    fn rule(id: &str, prefix: &str, class: Option<&str>, owner: bool, dm: bool) -> Rule {
        Rule {
            id: Some(id.to_owned()),
            priority: Some(1),
            status: RuleStatus::Enabled,
            filter: Filter::Prefix(prefix.to_owned()),
            legacy_prefix: None,
            destination: Destination {
                bucket_arn: "arn:aws:s3:::replica".to_owned(),
                account: None,
                storage_class: class.map(str::to_owned),
                owner_override: owner,
                replica_kms_key_id: None,
            },
            delete_marker_replication: dm,
            replicate_sse_kms: false,
        }
    }

    fn action(key: &str, kind: ActionKind, class: Option<&str>) -> PlannedAction {
        PlannedAction {
            key: key.to_owned(),
            action: kind,
            source_version_id: "v".to_owned(),
            dest_key: key.to_owned(),
            dest_version_id: String::new(),
            size_bytes: (kind != ActionKind::DeleteMarker).then_some(10),
            etag: None,
            last_modified: None,
            reason: String::new(),
            storage_class: class.map(str::to_owned),
            checksum_algorithm: None,
            is_delete_marker: kind == ActionKind::DeleteMarker,
        }
    }

    fn rules() -> Arc<ReplicaRules> {
        Arc::new(ReplicaRules::new(
            ReplicationConfig {
                role: None,
                rules: vec![
                    rule("cold", "cold/", Some("GLACIER_IR"), false, false),
                    rule("shared", "shared/", None, true, true),
                ],
            },
            "replica",
        ))
    }

    #[test]
    fn counts_classes_owner_override_and_rereplication() {
        let r = rules();
        let classes = StorageClassPolicy::Rules(r.clone());
        let acls = AclPolicy::ExceptOwnerOverride(r.clone());
        let mut impact = RulesImpact::new(Some(&r));
        for a in [
            action("cold/a", ActionKind::Copy, Some("GLACIER_IR")),
            action("shared/b", ActionKind::Copy, Some("STANDARD_IA")),
            action("other/c", ActionKind::Copy, Some("STANDARD_IA")),
            action("cold/d", ActionKind::DeleteMarker, None),
            action("shared/e", ActionKind::DeleteMarker, None),
            action("shared/f", ActionKind::Skip, Some("STANDARD")),
        ] {
            impact.add(&a, &classes, &acls, Some(&r));
        }
        // The rule chose GLACIER_IR for the replica: the restore writes STANDARD.
        assert_eq!(impact.classes["STANDARD"].objects, 1);
        assert_eq!(impact.classes["STANDARD_IA"].objects, 2);
        assert_eq!(impact.class_by_rule.objects, 1);
        assert_eq!(impact.owner_override.objects, 1);
        assert_eq!(impact.owner_override_rules, BTreeSet::from(["shared".to_owned()]));
        // cold/a and shared/b replicate back; the delete marker only under "shared"
        // (which replicates delete markers); other/c has no rule; the skip writes nothing.
        assert_eq!(impact.rereplicated.objects, 3);
        assert_eq!(impact.rereplicated.bytes, 20);
        assert_eq!(impact.notes().len(), 2, "{:?}", impact.notes());
        let warning = impact.rereplication_warning("replica").unwrap();
        assert!(warning.contains("the 3 writes"), "{warning}");
    }

    #[test]
    fn tag_filtered_rules_make_the_count_a_lower_bound() {
        let mut config = rules().config.clone();
        let mut tagged = rule("tagged", "", None, false, false);
        tagged.filter = Filter::Tag("keep".into(), "yes".into());
        config.rules.push(tagged);
        let r = ReplicaRules::new(config, "replica");
        let mut impact = RulesImpact::new(Some(&r));
        let a = action("cold/a", ActionKind::Copy, None);
        impact.add(&a, &StorageClassPolicy::Keep, &AclPolicy::Copy, Some(&r));
        let warning = impact.rereplication_warning("replica").unwrap();
        assert!(warning.contains(": at least 1 writes"), "{warning}");
        assert!(!RulesImpact::new(Some(&rules())).tag_rules);
    }

    #[test]
    fn explicit_choices_silence_the_rules() {
        let r = rules();
        let mut impact = RulesImpact::default();
        let a = action("shared/b", ActionKind::Copy, Some("STANDARD_IA"));
        impact.add(
            &a,
            &StorageClassPolicy::Override("ONEZONE_IA".into()),
            &AclPolicy::Copy,
            None,
        );
        assert_eq!(impact.classes["ONEZONE_IA"].objects, 1);
        assert_eq!(impact.owner_override.objects, 0);
        assert_eq!(impact.rereplicated.objects, 0);
        assert!(impact.notes().is_empty());
        assert_eq!(impact.rereplication_warning("replica"), None);
        // Without a rule that sets a class, the mix is not news.
        let mut keep = RulesImpact::default();
        keep.add(&a, &StorageClassPolicy::Rules(r.clone()), &AclPolicy::Skip, Some(&r));
        assert!(keep.notes().is_empty(), "{:?}", keep.notes());
        assert!(keep.rereplication_warning("replica").is_some());
    }
}
