//! Labels and selectors of the temporary objects lifeboat creates in a cluster (snapshots,
//! claims, mover Jobs). Backup, restore and the sweeps all read them from here, so the
//! orchestrators and the mover's Job spec agree without importing one another.

use std::collections::BTreeMap;

/// Label on everything lifeboat creates for a while (snapshots, claims, Jobs): what a later
/// run sweeps if this one was killed.
pub const TEMPORARY_LABEL: &str = "lifeboat.io/temporary";
/// Label naming the backup (or restore) a temporary object belongs to.
pub const BACKUP_LABEL: &str = "lifeboat.io/backup";
/// Label on lifeboat's own credential Secrets (`volumes.credentialsSecret`, and those a restore
/// creates for its movers): never backed up, never restored.
pub const CREDENTIALS_LABEL: &str = "lifeboat.io/credentials";
/// Standard managed-by label.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "lifeboat");

/// Selects lifeboat's temporary objects (what a sweep looks at).
pub fn temporary_selector() -> String {
    format!("{TEMPORARY_LABEL}=true")
}

/// `selector` (a user's label selector, if any) narrowed to objects that are not lifeboat's
/// temporary ones nor its credential Secrets: they never belong in a backup.
pub fn excluding_temporary(selector: Option<&str>) -> String {
    match selector {
        Some(s) => format!("{s},!{TEMPORARY_LABEL},!{CREDENTIALS_LABEL}"),
        None => format!("!{TEMPORARY_LABEL},!{CREDENTIALS_LABEL}"),
    }
}

/// The labels of a temporary object of `backup`.
pub fn temporary_labels(backup: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (TEMPORARY_LABEL.to_owned(), "true".to_owned()),
        (BACKUP_LABEL.to_owned(), backup.to_owned()),
        ("lifeboat.io/role".to_owned(), role.to_owned()),
    ])
}
