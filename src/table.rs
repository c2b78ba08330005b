//! Plain-text tables and CSV for the inspection commands (`du`, `fsck`).

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Renders rows under a header, each column as wide as its widest cell, two
/// spaces between columns, no trailing spaces.
pub fn render(headers: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            match align.get(i).copied().unwrap_or(Align::Left) {
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One CSV record, with its line ending.
pub fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_without_trailing_spaces() {
        let rows = vec![
            vec!["a/long-name".to_string(), "1.5 KiB".to_string()],
            vec!["b".to_string(), "0 B".to_string()],
        ];
        let t = render(&["NAME", "SIZE"], &[Align::Left, Align::Right], &rows);
        assert_eq!(
            t,
            "NAME            SIZE\na/long-name  1.5 KiB\nb                0 B\n"
        );
        // a left-aligned last column is not padded
        let t = render(
            &["SIZE", "NAME"],
            &[Align::Right, Align::Left],
            &[vec!["1".into(), "x".into()]],
        );
        assert_eq!(t, "SIZE  NAME\n   1  x\n");
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(
            csv_line(&["plain", "with,comma", "with \"quote\"", "two\nlines"]),
            "plain,\"with,comma\",\"with \"\"quote\"\"\",\"two\nlines\"\n"
        );
        assert_eq!(csv_line(&["a", ""]), "a,\n");
    }
}
