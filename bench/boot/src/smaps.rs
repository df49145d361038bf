//! Resident memory of a VM process from /proc/PID/smaps: the whole
//! process, and the part that is guest RAM.

/// One mapping of /proc/PID/smaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The header line: address range, permissions, offset, device,
    /// inode and path.
    pub header: String,
    /// The path column, empty for an anonymous mapping.
    pub path: String,
    /// Virtual size in KiB.
    pub size_kib: u64,
    /// Resident size in KiB.
    pub rss_kib: u64,
}

/// The rule that finds the guest RAM mapping of a VMM.
#[derive(Debug, Clone, Copy)]
pub enum GuestRam<'a> {
    /// Every mapping with this path. vmd maps a memfd, and the kernel
    /// names a memfd mapping `/memfd:NAME (deleted)`.
    Path(&'a str),
    /// The anonymous mapping of exactly this many KiB (QEMU maps the
    /// guest RAM block as one anonymous mapping of the `-m` size).
    AnonymousOfSize(u64),
}

/// The memory figures of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// Resident size of the whole process, in KiB.
    pub total_kib: u64,
    /// Resident size of the guest RAM mapping(s), in KiB.
    pub guest_kib: u64,
}

impl Resident {
    /// Resident memory that is not guest RAM, in KiB.
    pub fn overhead_kib(&self) -> u64 {
        self.total_kib - self.guest_kib
    }
}

/// Parses the text of /proc/PID/smaps.
pub fn parse(text: &str) -> Result<Vec<Mapping>, String> {
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.contains('-') && !first.ends_with(':') {
            // "start-end perms offset dev inode [path]": the path may hold
            // spaces, so it is the rest of the line after five columns.
            let path = line
                .splitn(6, char::is_whitespace)
                .nth(5)
                .unwrap_or("")
                .trim()
                .to_string();
            mappings.push(Mapping {
                header: line.to_string(),
                path,
                size_kib: 0,
                rss_kib: 0,
            });
            continue;
        }
        if first != "Size:" && first != "Rss:" {
            continue;
        }
        let mapping = mappings
            .last_mut()
            .ok_or_else(|| format!("smaps: {first} before the first mapping"))?;
        let value = words
            .next()
            .and_then(|word| word.parse().ok())
            .ok_or_else(|| format!("smaps: invalid line {line:?}"))?;
        if first == "Size:" {
            mapping.size_kib = value;
        } else {
            mapping.rss_kib = value;
        }
    }
    Ok(mappings)
}

/// Sums the resident sizes of `mappings`, and of the guest RAM among them.
/// Fails when no mapping matches `guest`, or when an anonymous-size rule
/// matches more than one mapping.
pub fn resident(mappings: &[Mapping], guest: GuestRam) -> Result<Resident, String> {
    let is_guest = |mapping: &Mapping| match guest {
        GuestRam::Path(path) => mapping.path == path,
        GuestRam::AnonymousOfSize(size_kib) => {
            mapping.path.is_empty() && mapping.size_kib == size_kib
        }
    };
    let guest_mappings: Vec<&Mapping> = mappings.iter().filter(|m| is_guest(m)).collect();
    match (guest, guest_mappings.len()) {
        (_, 0) => return Err(format!("no guest RAM mapping ({guest:?}) in smaps")),
        (GuestRam::AnonymousOfSize(_), count @ 2..) => {
            return Err(format!(
                "{count} anonymous mappings of the guest RAM size in smaps, expected one"
            ));
        }
        _ => {}
    }
    Ok(Resident {
        total_kib: mappings.iter().map(|m| m.rss_kib).sum(),
        guest_kib: guest_mappings.iter().map(|m| m.rss_kib).sum(),
    })
}

/// Reads /proc/PID/smaps.
pub fn read(pid: u32) -> Result<Vec<Mapping>, String> {
    let path = format!("/proc/{pid}/smaps");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c0a00000-55d0c0b00000 r-xp 00010000 fe:00 1234                       /usr/bin/vmd
Size:               1024 kB
KernelPageSize:        4 kB
Rss:                 700 kB
Pss:                 700 kB
7f0000000000-7f0020000000 rw-s 00000000 00:01 95                         /memfd:guest-ram (deleted)
Size:             524288 kB
Rss:                8192 kB
7f1000000000-7f1020000000 rw-p 00000000 00:00 0 
Size:             524288 kB
Rss:                2048 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  16 kB
";

    #[test]
    fn parse_reads_paths_sizes_and_rss() {
        let mappings = parse(SAMPLE).unwrap();
        assert_eq!(mappings.len(), 4);
        assert_eq!(mappings[0].path, "/usr/bin/vmd");
        assert_eq!(mappings[0].size_kib, 1024);
        assert_eq!(mappings[0].rss_kib, 700);
        assert_eq!(mappings[1].path, "/memfd:guest-ram (deleted)");
        assert_eq!(mappings[2].path, "");
        assert_eq!(mappings[3].path, "[stack]");
        assert_eq!(mappings[3].rss_kib, 16);
    }

    #[test]
    fn resident_by_path_counts_the_memfd() {
        let mappings = parse(SAMPLE).unwrap();
        let figures = resident(&mappings, GuestRam::Path("/memfd:guest-ram (deleted)")).unwrap();
        assert_eq!(
            figures,
            Resident {
                total_kib: 700 + 8192 + 2048 + 16,
                guest_kib: 8192
            }
        );
        assert_eq!(figures.overhead_kib(), 700 + 2048 + 16);
    }

    #[test]
    fn resident_by_size_counts_the_anonymous_mapping() {
        let mappings = parse(SAMPLE).unwrap();
        let figures = resident(&mappings, GuestRam::AnonymousOfSize(524288)).unwrap();
        assert_eq!(figures.guest_kib, 2048);
    }

    #[test]
    fn resident_without_guest_mapping_fails() {
        let mappings = parse(SAMPLE).unwrap();
        assert_eq!(
            resident(&mappings, GuestRam::AnonymousOfSize(1024)),
            Err("no guest RAM mapping (AnonymousOfSize(1024)) in smaps".to_string())
        );
    }

    #[test]
    fn resident_with_two_anonymous_candidates_fails() {
        let mut mappings = parse(SAMPLE).unwrap();
        mappings.push(mappings[2].clone());
        assert_eq!(
            resident(&mappings, GuestRam::AnonymousOfSize(524288)),
            Err("2 anonymous mappings of the guest RAM size in smaps, expected one".to_string())
        );
    }
}
