//! Terminal output for client subcommands: aligned tables and pretty JSON.

/// Prints rows under headers with columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    print!("{}", render_table(headers, rows));
}

pub fn render_table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::render_table;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let out = render_table(&["ID", "NAME"], vec![vec!["1".into(), "alpha".into()], vec!["22".into(), "b".into()]]);
        assert_eq!(out, "ID  NAME\n1   alpha\n22  b\n");
    }
}
