//! Sizes with scale suffixes, read and printed the way OpenBSD's
//! scan_scaled(3) and fmt_scaled(3) do: `512M`, `1.5G`, `88.1M`.

const SUFFIXES: [char; 7] = ['B', 'K', 'M', 'G', 'T', 'P', 'E'];

/// Why a size does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// Not a number with an optional fraction and suffix.
    #[error("Invalid argument")]
    Invalid,
    /// Larger than 2^63 - 1 bytes.
    #[error("Result too large")]
    TooLarge,
}

/// Parses a byte count with an optional fraction and a suffix out of
/// B, K, M, G, T, P, E (powers of 1024, either case).
pub fn scan_scaled(text: &str) -> Result<u64, ScanError> {
    let text = text.trim();
    let (number, scale) = match text.chars().last() {
        Some(last) if last.is_ascii_alphabetic() => {
            let power = SUFFIXES
                .iter()
                .position(|s| s.eq_ignore_ascii_case(&last))
                .ok_or(ScanError::Invalid)?;
            (&text[..text.len() - 1], 1u128 << (10 * power))
        }
        _ => (text, 1u128),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(ScanError::Invalid);
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScanError::Invalid);
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| ScanError::TooLarge)?
    };
    let mut bytes = whole.checked_mul(scale).ok_or(ScanError::TooLarge)?;
    // The fraction is scaled, then truncated to whole bytes: "1.5K" is
    // 1536 and "0.1B" is 0. Digits past the 18th cannot change the result.
    let digits = &fraction[..fraction.len().min(18)];
    if !digits.is_empty() {
        let numerator: u128 = digits.parse().map_err(|_| ScanError::Invalid)?;
        bytes += numerator * scale / 10u128.pow(digits.len() as u32);
    }
    u64::try_from(bytes)
        .ok()
        .filter(|&b| b <= i64::MAX as u64)
        .ok_or(ScanError::TooLarge)
}

/// Formats a byte count in at most four digits and a suffix, with one
/// decimal below 100 of a unit: `512M`, `1.0G`, `88.1M`, `0B`.
pub fn fmt_scaled(bytes: u64) -> String {
    let mut power = 0;
    while power + 1 < SUFFIXES.len() && bytes / 1024 >= 1u64 << (10 * power) {
        power += 1;
    }
    let factor = 1u64 << (10 * power);
    let mut number = bytes / factor;
    // The remainder, in units of the next smaller scale (0..1023), rounded
    // to one decimal digit.
    let mut tenths = match power {
        0 => 0,
        _ => ((bytes % factor) / (factor >> 10) * 10 + 512) / 1024,
    };
    if tenths == 10 {
        number += 1;
        tenths = 0;
    }
    let suffix = SUFFIXES[power];
    if number == 0 {
        return "0B".to_string();
    }
    if power == 0 || number >= 100 {
        if tenths >= 5 {
            number += 1;
        }
        return format!("{number}{suffix}");
    }
    format!("{number}.{tenths}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_scaled_reads_suffixes_and_fractions() {
        let cases = [
            ("512", Ok(512)),
            ("512M", Ok(512 << 20)),
            ("512m", Ok(512 << 20)),
            ("1G", Ok(1 << 30)),
            ("1.5K", Ok(1536)),
            ("0.5M", Ok(512 << 10)),
            ("2B", Ok(2)),
            ("", Err(ScanError::Invalid)),
            ("M", Err(ScanError::Invalid)),
            ("12X", Err(ScanError::Invalid)),
            ("-1M", Err(ScanError::Invalid)),
            ("1.2.3", Err(ScanError::Invalid)),
            ("9E", Err(ScanError::TooLarge)),
        ];
        for (text, expected) in cases {
            assert_eq!(scan_scaled(text), expected, "input {text:?}");
        }
    }

    #[test]
    fn fmt_scaled_matches_openbsd_output() {
        let cases = [
            (0, "0B"),
            (512, "512B"),
            (1023, "1023B"),
            (1024, "1.0K"),
            (512 << 20, "512M"),
            (64 << 20, "64.0M"),
            (1 << 30, "1.0G"),
            (128 << 30, "128G"),
            (92_378_726, "88.1M"),
            (1_048_064, "1024K"),
            (1_047_552, "1023K"),
            (1_048_575, "1024K"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(fmt_scaled(bytes), expected, "bytes {bytes}");
        }
    }
}
