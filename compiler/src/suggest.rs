//! "Did you mean" suggestions by edit distance.

/// The closest candidate to `word`, if one is close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let d = strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase());
            let sim = strsim::jaro_winkler(&lower, &c.to_ascii_lowercase());
            (c, d, sim)
        })
        .filter(|&(c, d, sim)| {
            let limit = (word.len().max(c.len()) / 3).max(1);
            d <= limit || (sim >= 0.88 && d <= limit + 1)
        })
        .min_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .map(|(c, _, _)| c)
}

/// `did you mean `x`?` for a hint, or a list of the options when there are few.
pub fn hint(word: &str, candidates: &[&str]) -> Option<String> {
    if let Some(s) = did_you_mean(word, candidates.iter().copied()) {
        return Some(format!("did you mean `{s}`?"));
    }
    match candidates.len() {
        0 => None,
        1..=12 => Some(format!(
            "expected one of: {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_typos_only() {
        let keys = ["temperature", "weight", "reduction"];
        assert_eq!(did_you_mean("temprature", keys), Some("temperature"));
        assert_eq!(did_you_mean("wieght", keys), Some("weight"));
        assert_eq!(did_you_mean("banana", keys), None);
        assert_eq!(
            did_you_mean("netwrok", ["network", "view"]),
            Some("network")
        );
    }
}
