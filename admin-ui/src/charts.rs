//! Server-rendered SVG bar charts for the dashboard (no JavaScript).
use std::fmt::Write;

/// A bar chart of daily counts; `days` are day numbers since the Unix epoch.
pub fn bars(title: &str, days: &[i64], values: &[u64], color: &str) -> String {
    let w = 600.0_f64;
    let h = 160.0_f64;
    let pad_l = 36.0;
    let pad_b = 22.0;
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let n = values.len().max(1) as f64;
    let bw = (w - pad_l) / n;
    let mut s = String::new();
    let total: u64 = values.iter().sum();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {w} {h}" role="img" aria-label="{} per day, last {} days: {total} in all" class="chart" preserveAspectRatio="none">"#,
        esc(title),
        values.len()
    );
    let _ = write!(
        s,
        r#"<line x1="{pad_l}" y1="{y}" x2="{w}" y2="{y}" class="axis"/><text x="2" y="12" class="tick">{max}</text><text x="2" y="{y}" class="tick">0</text>"#,
        y = h - pad_b
    );
    for (i, v) in values.iter().enumerate() {
        let bh = (*v as f64 / max as f64) * (h - pad_b - 8.0);
        let x = pad_l + i as f64 * bw + 1.0;
        let y = h - pad_b - bh;
        let day = days.get(i).copied().unwrap_or(0);
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"><title>{}: {v}</title></rect>"#,
            (bw - 2.0).max(1.0),
            date(day)
        );
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            s,
            r#"<text x="{pad_l}" y="{}" class="tick">{}</text><text x="{w}" y="{}" class="tick" text-anchor="end">{}</text>"#,
            h - 6.0,
            date(*first),
            h - 6.0,
            date(*last)
        );
    }
    s.push_str("</svg>");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `YYYY-MM-DD` for a day number since the epoch.
pub fn date(day: i64) -> String {
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Civil-from-days (Howard Hinnant).
pub fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days-from-civil: the day number of `YYYY-MM-DD`, if it is a date.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let day = era * 146_097 + doe - 719_468;
    (civil(day) == (y, m, d)).then_some(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(parse_date("2026-11-24"), Some(20_781));
        assert_eq!(date(20_781), "2026-11-24");
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("x"), None);
    }

    #[test]
    fn chart_has_one_bar_per_day_and_escapes_its_title() {
        let svg = bars("a<b", &[1, 2, 3], &[0, 5, 2], "#000");
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("a&lt;b"));
        assert!(svg.contains("7 in all"));
    }
}
