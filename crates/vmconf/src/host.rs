//! Host lookups made while loading: realpath of image files, the user
//! database and the online CPU count. Nothing here writes anything.

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Group, User};

/// Host facts that stay fixed during one load.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HostFacts {
    /// CPUs online on this host, the upper bound of `cpus`.
    pub(crate) online_cpus: usize,
}

impl HostFacts {
    pub(crate) fn probe() -> Self {
        HostFacts {
            online_cpus: online_cpus(),
        }
    }
}

/// Counts the online CPUs from /sys/devices/system/cpu/online ("0-3,5"),
/// falling back to the CPUs this process may run on.
fn online_cpus() -> usize {
    let from_sysfs = fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|text| count_cpu_list(text.trim()));
    from_sysfs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

fn count_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0usize;
    for range in list.split(',') {
        let (first, last) = match range.split_once('-') {
            Some((first, last)) => (first.parse::<usize>().ok()?, last.parse::<usize>().ok()?),
            None => {
                let cpu = range.parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        count = count.checked_add(last.checked_sub(first)? + 1)?;
    }
    Some(count)
}

/// Turns an I/O error into the lowercase strerror text used in messages.
pub(crate) fn describe_io_error(error: &io::Error) -> String {
    if error.kind() == io::ErrorKind::NotFound {
        return "no such file or directory".to_owned();
    }
    let text = error.to_string();
    let text = match text.find(" (os error") {
        Some(end) => &text[..end],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_owned(),
    }
}

/// Resolves a kernel, firmware or initrd path with realpath and checks
/// that it is a regular file.
pub(crate) fn resolve_regular_file(path: &str) -> Result<PathBuf, String> {
    let resolved = fs::canonicalize(path).map_err(|error| describe_io_error(&error))?;
    let metadata = fs::metadata(&resolved).map_err(|error| describe_io_error(&error))?;
    if !metadata.is_file() {
        return Err("not a regular file".to_owned());
    }
    Ok(resolved)
}

/// Resolves a disk path with realpath. The image must be a regular file or
/// a block device. Other kinds (directories, FIFOs) cannot hold a disk, so
/// they are rejected now rather than failing or blocking at VM start.
/// The image is not opened here: permissions and the format are checked by
/// whoever opens it when the VM starts.
pub(crate) fn resolve_disk(
    path: &str,
    directories: &mut DirectoryCache,
) -> Result<PathBuf, String> {
    let (resolved, metadata) = directories.resolve(Path::new(path))?;
    let file_type = metadata.file_type();
    if !(file_type.is_file() || file_type.is_block_device()) {
        return Err("not a regular file or block device".to_owned());
    }
    Ok(resolved)
}

/// realpath(3) with the resolved directories remembered for one load.
/// realpath reads every component of every path, but the disks of many VMs
/// usually share a directory. With the directory known, a file that is not
/// a symbolic link needs one lstat.
#[derive(Debug, Default)]
pub(crate) struct DirectoryCache {
    directories: std::collections::HashMap<PathBuf, PathBuf>,
}

impl DirectoryCache {
    /// Returns the realpath of `path` and the metadata of the file it
    /// names.
    pub(crate) fn resolve(&mut self, path: &Path) -> Result<(PathBuf, fs::Metadata), String> {
        let describe = |error: io::Error| describe_io_error(&error);
        let resolve_fully = |path: &Path| {
            let resolved = fs::canonicalize(path).map_err(describe)?;
            let metadata = fs::metadata(&resolved).map_err(describe)?;
            Ok((resolved, metadata))
        };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return resolve_fully(path);
        };
        let trailing_slash = path.as_os_str().as_encoded_bytes().ends_with(b"/");
        if parent.as_os_str().is_empty() || trailing_slash {
            return resolve_fully(path);
        }
        let directory = match self.directories.get(parent) {
            Some(directory) => directory.clone(),
            None => {
                let directory = fs::canonicalize(parent).map_err(describe)?;
                self.directories
                    .insert(parent.to_path_buf(), directory.clone());
                directory
            }
        };
        let candidate = directory.join(name);
        let metadata = fs::symlink_metadata(&candidate).map_err(describe)?;
        if metadata.file_type().is_symlink() {
            return resolve_fully(&candidate);
        }
        Ok((candidate, metadata))
    }
}

/// Looks up a user by name; a name that is not in the database but is all
/// digits is taken as a numeric uid.
pub(crate) fn lookup_user(name: &str) -> Result<u32, String> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => parse_numeric_id(name).ok_or_else(|| format!("unknown user \"{name}\"")),
        Err(error) => Err(format!(
            "failed to look up user \"{name}\": {}",
            error.desc()
        )),
    }
}

/// Looks up a group by name; an all-digit name not in the database is taken
/// as a numeric gid.
pub(crate) fn lookup_group(name: &str) -> Result<u32, String> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => parse_numeric_id(name).ok_or_else(|| format!("unknown group \"{name}\"")),
        Err(error) => Err(format!(
            "failed to look up group \"{name}\": {}",
            error.desc()
        )),
    }
}

/// Parses a numeric uid or gid; `u32::MAX` is excluded because it means
/// "no change" to chown(2).
pub(crate) fn parse_numeric_id(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|id| *id != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_counts_ranges() {
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3"), Some(4));
        assert_eq!(count_cpu_list("0-1,4,6-7"), Some(5));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn directory_cache_matches_realpath() {
        let directory = std::env::temp_dir().join(format!("vmconf-host-{}", std::process::id()));
        fs::create_dir_all(directory.join("sub")).unwrap();
        fs::write(directory.join("sub/file"), b"x").unwrap();
        std::os::unix::fs::symlink("sub/file", directory.join("link")).unwrap();
        let mut cache = DirectoryCache::default();
        for relative in [
            "sub/file",
            "link",
            "sub/../sub/file",
            "sub/./file",
            "sub",
            "sub/.",
        ] {
            let path = directory.join(relative);
            let resolved = cache.resolve(&path).map(|(resolved, _)| resolved);
            assert_eq!(
                resolved,
                Ok(fs::canonicalize(&path).unwrap()),
                "case {relative}"
            );
        }
        let missing = cache
            .resolve(&directory.join("missing"))
            .map(|(resolved, _)| resolved);
        assert_eq!(missing, Err("no such file or directory".to_owned()));
        let not_directory = cache
            .resolve(&directory.join("sub/file/"))
            .map(|(resolved, _)| resolved);
        assert_eq!(not_directory, Err("not a directory".to_owned()));
        fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn numeric_id_rejects_signs_and_overflow() {
        assert_eq!(parse_numeric_id("1000"), Some(1000));
        assert_eq!(parse_numeric_id("+1"), None);
        assert_eq!(parse_numeric_id("4294967295"), None);
        assert_eq!(parse_numeric_id("4294967296"), None);
    }
}
