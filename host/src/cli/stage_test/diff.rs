//! The line diffs `sluice test` prints for what a case expected and got.

pub(super) fn lists_match<A, B>(want: &[A], got: &[B], same: impl Fn(&A, &B) -> bool) -> bool {
    want.len() == got.len() && want.iter().zip(got).all(|(a, b)| same(a, b))
}

/// A line diff of `want` against `got` (longest common subsequence): `  `
/// for a line in both, `- ` expected only, `+ ` got only.
pub(super) fn diff<A, B>(
    want: &[A],
    got: &[B],
    same: impl Fn(&A, &B) -> bool,
    show_want: impl Fn(&A) -> String,
    show_got: impl Fn(&B) -> String,
) -> String {
    let (n, m) = (want.len(), got.len());
    // lcs[i][j]: the longest common subsequence of want[i..] and got[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if same(&want[i], &got[j]) { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut lines = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && same(&want[i], &got[j]) {
            lines.push(format!("      {}", show_got(&got[j])));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(format!("    - {}", show_want(&want[i])));
            i += 1;
        } else {
            lines.push(format!("    + {}", show_got(&got[j])));
            j += 1;
        }
    }
    if lines.is_empty() {
        lines.push("    (none)".into());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::diff;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_diff_marks_what_is_missing_and_what_is_extra() {
        let want = strings(&["a", "b", "c"]);
        let got = strings(&["a", "x", "c", "d"]);
        let text = diff(&want, &got, |a, b| a == b, |s| s.clone(), |s| s.clone());
        assert_eq!(text, "      a\n    - b\n    + x\n      c\n    + d");
    }
}
