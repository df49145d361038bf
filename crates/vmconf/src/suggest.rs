//! "Did you mean" suggestions for misspelled keywords and names.

/// Returns the candidate closest to `word` by edit distance (insertions,
/// deletions, substitutions and swaps of neighbours), if it is close enough
/// to be a likely typo: at most one edit per three characters, and at least
/// one.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&word, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance between two strings. Both are at most
/// a token long, so the quadratic table is small.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        table[i * width] = i;
    }
    for (j, cell) in table.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[(i - 1) * width + j] + 1)
                .min(table[i * width + j - 1] + 1)
                .min(table[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[(i - 2) * width + j - 2] + 1);
            }
            table[i * width + j] = best;
        }
    }
    table[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_keyword() {
        let keywords = ["memory", "disk", "interface", "interfaces", "cpus"];
        assert_eq!(closest("memroy", keywords), Some("memory"));
        assert_eq!(closest("dsk", keywords), Some("disk"));
        assert_eq!(closest("intrface", keywords), Some("interface"));
        assert_eq!(closest("cpu", keywords), Some("cpus"));
        assert_eq!(closest("Memory", keywords), Some("memory"));
        assert_eq!(closest("ram", keywords), None);
    }
}
