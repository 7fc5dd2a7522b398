//! `casegate ledger` output: an aligned table for people, JSON for programs.

use super::Row;

/// An aligned text table, one line per row under a header: ROUTE FRONT-ID BACK-ID
/// [COMMENT-ID] FRONT-CASE BACK-CASE NAME SIZE CREATED. COMMENT-ID appears only when a
/// row has one; a missing value is `-`; control characters in values are escaped so a
/// row stays on one line. Widths count characters, so wide (CJK) names may misalign.
pub fn render_table(rows: &[Row]) -> String {
    let comments = rows.iter().any(|r| r.back_comment_id.is_some());
    let mut header = vec!["ROUTE", "FRONT-ID", "BACK-ID"];
    if comments {
        header.push("COMMENT-ID");
    }
    header.extend(["FRONT-CASE", "BACK-CASE", "NAME", "SIZE", "CREATED"]);
    let size_column = header.len() - 2;

    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let mut cells = vec![cell(&row.route), cell(&row.front_id), cell(&row.back_id)];
        if comments {
            cells.push(opt(&row.back_comment_id));
        }
        cells.extend([
            opt(&row.front_case),
            opt(&row.back_case),
            opt(&row.name),
            row.size.map_or_else(|| "-".to_string(), |s| s.to_string()),
            opt(&row.created_at),
        ]);
        table.push(cells);
    }

    let mut widths = vec![0usize; header.len()];
    for cells in &table {
        for (width, c) in widths.iter_mut().zip(cells) {
            *width = (*width).max(c.chars().count());
        }
    }

    let mut out = String::new();
    for (r, cells) in table.iter().enumerate() {
        let mut line = String::new();
        for (i, (c, width)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width - c.chars().count();
            if i == size_column && r > 0 {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The rows as a pretty JSON array (every field, `null` when unknown).
pub fn render_json(rows: &[Row]) -> String {
    // Serializing plain strings and numbers cannot fail; the fallback is never taken.
    serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".to_string())
}

fn opt(value: &Option<String>) -> String {
    value.as_deref().map_or_else(|| "-".to_string(), cell)
}

fn cell(value: &str) -> String {
    if value.is_empty() {
        return "-".to_string();
    }
    if !value.chars().any(char::is_control) {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(front: &str, back: &str) -> Row {
        Row {
            route: "soar".into(),
            front_id: front.into(),
            back_id: back.into(),
            front_case: Some("42".into()),
            name: Some("report.pdf".into()),
            size: Some(1234),
            ..Row::default()
        }
    }

    #[test]
    fn table_is_aligned_and_hides_the_comment_column_when_unused() {
        let rows = [row("1", "9c23-aa"), row("12", "9c23-bbbbbbb")];
        let table = render_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "ROUTE  FRONT-ID  BACK-ID       FRONT-CASE  BACK-CASE  NAME        SIZE  CREATED"
        );
        assert_eq!(
            lines[1],
            "soar   1         9c23-aa       42          -          report.pdf  1234  -"
        );
        assert_eq!(lines.len(), 3);
        assert!(!table.contains("COMMENT-ID"));
    }

    #[test]
    fn table_shows_comment_ids_and_escapes_control_characters() {
        let mut r = row("f1", "file-1");
        r.back_comment_id = Some("comment-1".into());
        r.name = Some("evil\nname\x1b".into());
        let table = render_table(&[r]);
        assert!(table.lines().next().unwrap().contains("COMMENT-ID"));
        assert!(table.contains("comment-1"));
        assert!(table.contains("evil\\nname\\u{1b}"));
        assert_eq!(table.lines().count(), 2);
        assert_eq!(render_table(&[]).lines().count(), 1);
    }

    #[test]
    fn json_is_an_array_of_every_field() {
        let json = render_json(&[row("1", "b")]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value[0]["front_id"], "1");
        assert_eq!(value[0]["size"], 1234);
        assert!(value[0]["md5"].is_null());
        assert_eq!(render_json(&[]).trim(), "[]");
    }
}
