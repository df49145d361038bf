//! The results table: for each guest and figure, the median, minimum and
//! maximum per VMM, and the ratio of vmd's median to each QEMU median.

use crate::GuestKind;
use crate::sample::Measurement;
use crate::stats::{Summary, summarize};
use crate::vmms::VmmKind;

/// One measured boot.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The VMM that ran it.
    pub vmm: VmmKind,
    /// The guest booted.
    pub guest: GuestKind,
    /// Its figures.
    pub measurement: Measurement,
}

/// A figure taken from each sample, with its unit and number format.
struct Figure {
    name: &'static str,
    value: fn(&Measurement) -> f64,
    format: fn(f64) -> String,
}

fn milliseconds(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn mebibytes(value: f64) -> String {
    format!("{value:.1}")
}

// Two decimals, or two significant digits for a ratio below 0.1.
fn ratio(value: f64) -> String {
    if value >= 0.1 || value <= 0.0 {
        return format!("{value:.2}");
    }
    let decimals = (1.0 - value.log10().floor()) as usize;
    format!("{value:.decimals$}")
}

const KIB_PER_MIB: f64 = 1024.0;

fn figures(guest: GuestKind) -> [Figure; 3] {
    let boot_name = match guest {
        GuestKind::FirstByte => "start to first byte, ms",
        GuestKind::Linux => "start to VMDTEST-BOOTED, ms",
    };
    [
        Figure {
            name: boot_name,
            value: |m| m.boot.as_secs_f64() * 1000.0,
            format: milliseconds,
        },
        Figure {
            name: "RSS minus guest RAM, MiB",
            value: |m| m.memory.overhead_kib() as f64 / KIB_PER_MIB,
            format: mebibytes,
        },
        Figure {
            name: "RSS of the VM process, MiB",
            value: |m| m.memory.total_kib as f64 / KIB_PER_MIB,
            format: mebibytes,
        },
    ]
}

/// Formats the table in Markdown, with one row per guest and figure.
pub fn table(samples: &[Sample], vmms: &[VmmKind], guests: &[GuestKind]) -> String {
    let others: Vec<VmmKind> = if vmms.contains(&VmmKind::Vmd) {
        vmms.iter()
            .copied()
            .filter(|v| *v != VmmKind::Vmd)
            .collect()
    } else {
        Vec::new()
    };
    let mut text = String::from("| guest | figure |");
    for vmm in vmms {
        text.push_str(&format!(" {} |", vmm.label()));
    }
    for other in &others {
        text.push_str(&format!(" vmd / {} |", other.label()));
    }
    text.push_str("\n|---|---|");
    text.push_str(&"---:|".repeat(vmms.len() + others.len()));
    text.push('\n');

    for &guest in guests {
        for figure in figures(guest) {
            let summary_of = |vmm: VmmKind| -> Option<Summary> {
                let values: Vec<f64> = samples
                    .iter()
                    .filter(|s| s.vmm == vmm && s.guest == guest)
                    .map(|s| (figure.value)(&s.measurement))
                    .collect();
                summarize(&values)
            };
            text.push_str(&format!("| {} | {} |", guest.label(), figure.name));
            for &vmm in vmms {
                let cell = summary_of(vmm).map_or("-".to_string(), |s| {
                    format!(
                        "{} ({}–{})",
                        (figure.format)(s.median),
                        (figure.format)(s.min),
                        (figure.format)(s.max)
                    )
                });
                text.push_str(&format!(" {cell} |"));
            }
            for &other in &others {
                let ratio = match (summary_of(VmmKind::Vmd), summary_of(other)) {
                    (Some(ours), Some(theirs)) if theirs.median > 0.0 => {
                        ratio(ours.median / theirs.median)
                    }
                    _ => "-".to_string(),
                };
                text.push_str(&format!(" {ratio} |"));
            }
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::smaps::Resident;

    fn sample(vmm: VmmKind, boot_ms: u64, total_kib: u64) -> Sample {
        Sample {
            vmm,
            guest: GuestKind::FirstByte,
            measurement: Measurement {
                boot: Duration::from_millis(boot_ms),
                memory: Resident {
                    total_kib,
                    guest_kib: 1024,
                },
            },
        }
    }

    #[test]
    fn table_has_medians_ranges_and_ratios() {
        let samples = [
            sample(VmmKind::Vmd, 10, 4096),
            sample(VmmKind::Vmd, 30, 4096),
            sample(VmmKind::Vmd, 20, 6144),
            sample(VmmKind::QemuPc, 200, 41984),
        ];
        let text = table(
            &samples,
            &[VmmKind::Vmd, VmmKind::QemuPc],
            &[GuestKind::FirstByte],
        );
        assert_eq!(
            text,
            "| guest | figure | vmd | QEMU pc | vmd / QEMU pc |\n\
             |---|---|---:|---:|---:|\n\
             | first byte | start to first byte, ms | 20.0 (10.0–30.0) | 200 (200–200) | 0.10 |\n\
             | first byte | RSS minus guest RAM, MiB | 3.0 (3.0–5.0) | 40.0 (40.0–40.0) | 0.075 |\n\
             | first byte | RSS of the VM process, MiB | 4.0 (4.0–6.0) | 41.0 (41.0–41.0) | 0.098 |\n"
        );
    }

    #[test]
    fn small_ratio_keeps_two_significant_digits() {
        assert_eq!(ratio(0.5), "0.50");
        assert_eq!(ratio(2.345), "2.35");
        assert_eq!(ratio(0.082), "0.082");
        assert_eq!(ratio(0.00223), "0.0022");
    }

    #[test]
    fn table_without_vmd_has_no_ratios() {
        let samples = [sample(VmmKind::QemuPc, 200, 41984)];
        let text = table(&samples, &[VmmKind::QemuPc], &[GuestKind::FirstByte]);
        assert!(
            text.starts_with("| guest | figure | QEMU pc |\n|---|---|---:|\n"),
            "{text}"
        );
    }
}
