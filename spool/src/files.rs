//! How the spool touches the file system: it holds every user's command
//! lines, paths and flows, so its directory is 0750 and its files 0640
//! (readable by the group the directory is given, for a detector reading it
//! directly), no file is reached through a symbolic link, and a directory
//! someone else could write to is refused.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the spool directory (with the setgid bit when it has a group,
/// so the files made in it take that group).
pub const DIR_MODE: u32 = 0o750;
/// Mode of every file the spool makes.
pub const FILE_MODE: u32 = 0o640;

/// Create `dir` (0750) or check the one there: owned by this process's
/// user, writable by no one else. With `group`, the directory is given that
/// group and the setgid bit. Errors say what is wrong and where.
pub fn prepare_dir(dir: &Path, group: Option<u32>) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    check_owned(dir)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(dir, None, Some(gid))?;
    }
    let setgid = if group.is_some() { 0o2000 } else { 0 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE | setgid))
}

/// Refuse a directory that is a symbolic link, owned by another user, or
/// writable by group or others: anyone who can write there can plant links
/// or files the spool would then follow or read.
pub fn check_owned(dir: &Path) -> io::Result<()> {
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: {why}", dir.display()),
        ))
    };
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return refuse("not a directory (a symbolic link is not accepted)".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return refuse(format!(
            "owned by uid {}, not by this process's uid {me}: refusing to keep events there",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return refuse(format!(
            "writable by group or others (mode {mode:04o}): chmod go-w it"
        ));
    }
    Ok(())
}

/// Options for a spool file: mode 0640 when created, never through a link.
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE).custom_flags(libc::O_NOFOLLOW);
    o
}

/// Open an existing spool file to read, never through a link.
pub fn open_read(path: &Path) -> io::Result<File> {
    options().read(true).open(path)
}

/// Write `contents` to `path` through a temporary file and a rename.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(contents)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_is_0750_and_its_files_0640() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data/spool");
        prepare_dir(&dir, None).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o750);
        let file = dir.join("f");
        options().write(true).create_new(true).open(&file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o640);
    }

    #[test]
    fn a_directory_with_a_group_takes_it_and_passes_it_on() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        // SAFETY: getegid has no preconditions and cannot fail.
        let gid = unsafe { libc::getegid() };
        prepare_dir(&dir, Some(gid)).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o2750, gid));
    }

    #[test]
    fn an_open_directory_is_tightened_a_writable_one_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_dir(&dir, None).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o750);
        for mode in [0o775, 0o757, 0o777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = prepare_dir(&dir, None).unwrap_err().to_string();
            assert!(
                e.contains("writable by group or others") && e.contains("spool"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_link_or_someone_elses_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = check_owned(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // owned by nobody (65534): this test runs as root, as the collector does
        std::os::unix::fs::chown(&real, Some(65534), None).expect("chown needs root");
        let e = prepare_dir(&real, None).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }

    #[test]
    fn no_spool_file_is_opened_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("elsewhere");
        std::fs::write(&target, b"secret").unwrap();
        let link = root.path().join("00000001.seg");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_read(&link).is_err());
        assert!(options().write(true).open(&link).is_err());
        assert!(
            replace(&link, b"x").is_ok(),
            "a rename replaces the link itself"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"secret");
    }
}
