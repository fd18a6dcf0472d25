//! Which objects a backup takes or a restore writes: namespace and resource globs, a label
//! selector, cluster-scoped resources. Pure functions, no I/O.

use serde::{Deserialize, Serialize};

/// Whether cluster-scoped resources are taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClusterResources {
    /// All of them when every namespace is taken; only the always-captured ones when the
    /// backup is limited to some namespaces (as Velero does).
    #[default]
    Auto,
    /// All of them.
    True,
    /// Only the always-captured ones.
    False,
}

/// The filters of a backup, as given on the command line, in the config or in a schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filters {
    /// Namespaces to take (globs); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_namespaces: Vec<String>,
    /// Namespaces to leave out (globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_namespaces: Vec<String>,
    /// Resources to take: `deployments.apps`, `configmaps`, a kind, or a glob; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_resources: Vec<String>,
    /// Resources to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_resources: Vec<String>,
    /// Label selector applied by the API server (`app=shop,tier!=cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Cluster-scoped resources.
    #[serde(default)]
    pub include_cluster_resources: ClusterResources,
}

impl Filters {
    /// The JSON names of the fields. The config refuses any other key; a manifest's reader
    /// ignores other keys instead (a newer lifeboat may record more), see [`Filters::lenient`].
    pub const FIELDS: [&'static str; 6] = [
        "includeNamespaces",
        "excludeNamespaces",
        "includeResources",
        "excludeResources",
        "selector",
        "includeClusterResources",
    ];

    /// Deserializes filters as a manifest records them: keys other than [`Filters::FIELDS`]
    /// are ignored, and `null` (a manifest written without filters) reads as no filters.
    pub fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let Some(mut map) = Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?
        else {
            return Ok(Self::default());
        };
        map.retain(|k, _| Self::FIELDS.contains(&k.as_str()));
        serde_json::from_value(serde_json::Value::Object(map)).map_err(D::Error::custom)
    }

    /// Returns true if and only if objects of namespace `ns` are taken.
    pub fn namespace_included(&self, ns: &str) -> bool {
        namespace_allowed(&self.include_namespaces, &self.exclude_namespaces, ns)
    }

    /// Returns true if and only if the resource filters take the resource `plural` of API
    /// `group` (`""` for core), of kind `kind` (before always-captured rules).
    pub fn resource_included(&self, group: &str, plural: &str, kind: &str) -> bool {
        resource_allowed(
            &self.include_resources,
            &self.exclude_resources,
            group,
            plural,
            kind,
        )
    }

    /// Returns true if and only if every cluster-scoped resource is taken.
    pub fn all_cluster_resources(&self) -> bool {
        match self.include_cluster_resources {
            ClusterResources::True => true,
            ClusterResources::False => false,
            ClusterResources::Auto => {
                self.include_namespaces.is_empty()
                    || self.include_namespaces.iter().any(|p| p == "*")
            }
        }
    }
}

/// `configmaps`, `deployments.apps`, `Deployment`, or globs of those.
fn resource_matches(pattern: &str, group: &str, plural: &str, kind: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let group_resource = if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    };
    glob(&p, plural) || glob(&p, &group_resource) || glob(&p, &kind.to_ascii_lowercase())
}

/// Returns true if and only if namespace `ns` passes include globs (empty: all) and exclude
/// globs. Shared by backup and restore filters.
pub fn namespace_allowed(include: &[String], exclude: &[String], ns: &str) -> bool {
    (include.is_empty() || include.iter().any(|p| glob(p, ns)))
        && !exclude.iter().any(|p| glob(p, ns))
}

/// Returns true if and only if the resource passes include patterns (empty: all) and exclude
/// patterns; a pattern matches the plural, `plural.group` or the kind. Shared by backup and
/// restore filters.
pub fn resource_allowed(
    include: &[String],
    exclude: &[String],
    group: &str,
    plural: &str,
    kind: &str,
) -> bool {
    (include.is_empty()
        || include
            .iter()
            .any(|p| resource_matches(p, group, plural, kind)))
        && !exclude
            .iter()
            .any(|p| resource_matches(p, group, plural, kind))
}

/// Shell-style glob: `*` any run of characters, `?` one character; everything else literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` and the text index it has consumed up to, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt<'a>(group: &'a str, plural: &'a str, kind: &'a str) -> (&'a str, &'a str, &'a str) {
        (group, plural, kind)
    }

    #[test]
    fn fields_lists_every_key_and_lenient_ignores_only_unknown_ones() {
        let all = Filters {
            include_namespaces: vec!["a".into()],
            exclude_namespaces: vec!["b".into()],
            include_resources: vec!["c".into()],
            exclude_resources: vec!["d".into()],
            selector: Some("e=f".into()),
            include_cluster_resources: ClusterResources::True,
        };
        let value = serde_json::to_value(&all).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = Filters::FIELDS.to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
        let mut newer = value.clone();
        newer["fromTheFuture"] = serde_json::json!(true);
        assert_eq!(Filters::lenient(newer.clone()).unwrap(), all);
        assert!(
            serde_json::from_value::<Filters>(newer).is_err(),
            "the config stays strict"
        );
        assert_eq!(
            Filters::lenient(serde_json::Value::Null).unwrap(),
            Filters::default()
        );
        assert!(Filters::lenient(serde_json::json!({"selector": 3})).is_err());
    }

    #[test]
    fn glob_cases() {
        for (p, t, want) in [
            ("*", "anything", true),
            ("team-*", "team-a", true),
            ("team-*", "teams", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*-prod", "shop-prod", true),
            ("*a*b", "xxaxxb", true),
            ("*a*b", "xxaxxbx", false),
            ("exact", "exact", true),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(glob(p, t), want, "glob({p:?}, {t:?})");
        }
    }

    #[test]
    fn namespace_filters_combine_include_then_exclude() {
        let f = Filters {
            include_namespaces: vec!["shop-*".into(), "db".into()],
            exclude_namespaces: vec!["shop-test".into()],
            ..Default::default()
        };
        assert!(f.namespace_included("shop-prod"));
        assert!(f.namespace_included("db"));
        assert!(!f.namespace_included("shop-test"));
        assert!(!f.namespace_included("kube-system"));
        assert!(Filters::default().namespace_included("kube-system"));
    }

    #[test]
    fn resources_match_by_plural_group_resource_kind_and_glob() {
        let deploy = rt("apps", "deployments", "Deployment");
        let cm = rt("", "configmaps", "ConfigMap");
        let only = |p: &str| Filters {
            include_resources: vec![p.into()],
            ..Default::default()
        };
        assert!(only("deployments.apps").resource_included(deploy.0, deploy.1, deploy.2));
        assert!(only("deployments").resource_included(deploy.0, deploy.1, deploy.2));
        assert!(only("Deployment").resource_included(deploy.0, deploy.1, deploy.2));
        assert!(!only("deployments.apps").resource_included(cm.0, cm.1, cm.2));
        assert!(only("*.apps").resource_included(deploy.0, deploy.1, deploy.2));
        assert!(!only("*.apps").resource_included(cm.0, cm.1, cm.2));
        let no_cm = Filters {
            exclude_resources: vec!["configmaps".into()],
            ..Default::default()
        };
        assert!(!no_cm.resource_included(cm.0, cm.1, cm.2));
        assert!(no_cm.resource_included(deploy.0, deploy.1, deploy.2));
    }

    #[test]
    fn cluster_resources_auto_follows_namespace_filter() {
        assert!(Filters::default().all_cluster_resources());
        let some = Filters {
            include_namespaces: vec!["one".into()],
            ..Default::default()
        };
        assert!(!some.all_cluster_resources());
        let forced = Filters {
            include_cluster_resources: ClusterResources::True,
            ..some
        };
        assert!(forced.all_cluster_resources());
    }
}
