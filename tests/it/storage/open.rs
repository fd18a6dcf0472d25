//! Choosing and opening backends from configured locations.

use futures::TryStreamExt;
use lifeboat::config::Location;
use lifeboat::storage::{StorageError, open_reader, open_writer, probe_write};

#[tokio::test]
async fn a_read_only_location_opens_for_reading_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut loc = Location::local(dir.path());
    loc.read_only = true;
    assert!(open_reader("ro", &loc).is_ok());
    let err = open_writer("ro", &loc)
        .err()
        .expect("a read-only location must not open for writing");
    assert!(
        matches!(err, StorageError::ReadOnly { ref location } if location == "ro"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_location_without_a_kind_is_a_config_error() {
    let loc = Location {
        read_only: false,
        encryption: None,
        local: None,
        azure: None,
    };
    assert!(matches!(
        open_reader("empty", &loc).err(),
        Some(StorageError::Config { .. })
    ));
}

#[tokio::test]
async fn probe_write_ignores_read_only_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut loc = Location::local(dir.path().join("repo"));
    loc.read_only = true;
    // Writable underneath: the probe reports what it observes, not what the config claims.
    assert!(probe_write("local", &loc).await.unwrap());
    let left: Vec<_> = open_reader("local", &loc)
        .unwrap()
        .list("")
        .try_collect()
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "the probe object must be deleted: {left:?}"
    );
}

#[tokio::test]
async fn probe_write_fails_rather_than_refuses_on_a_broken_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    // A directory cannot be created under a regular file: a broken location, not a read-only one.
    let loc = Location::local(dir.path().join("file").join("repo"));
    assert!(matches!(
        probe_write("broken", &loc).await,
        Err(StorageError::Io { .. })
    ));
}
