//! The throughput plot, as a self-contained SVG (no plotting dependency for one chart).

use std::fmt::Write as _;

use super::Report;

/// Throughput against jobs in flight (log2 x, log10 y), one line per setting, its
/// sequential baseline dashed.
pub fn plot(r: &Report) -> String {
    let (w, h, l, b) = (720.0, 420.0, 70.0, 50.0);
    let max_m = r
        .settings
        .iter()
        .flat_map(|s| s.pipeline.iter().map(|p| p.in_flight))
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let rates = r.settings.iter().flat_map(|s| {
        s.pipeline
            .iter()
            .chain([&s.baseline])
            .map(|p| p.changes_per_s)
    });
    let (lo, hi) = rates.fold((f64::MAX, 1.0f64), |(lo, hi), v| {
        (lo.min(v.max(0.1)), hi.max(v))
    });
    let (ylo, yhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |m: f64| l + (m.log2() / max_m.log2()) * (w - l - 20.0);
    let y = |v: f64| (h - b) - ((v.max(0.1).log10() - ylo) / (yhi - ylo)) * (h - b - 30.0);
    let colors = ["#4c78a8", "#f58518", "#54a24b", "#e45756"];
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="{w}" height="{h}" fill="white"/>"#
    );
    let _ = write!(
        s,
        r#"<text x="{l}" y="18" font-weight="bold">Recovery throughput vs jobs in flight (dashed: sequential baseline)</text>"#
    );
    let mut m = 1.0;
    while m <= max_m {
        let _ = write!(
            s,
            r##"<line x1="{0}" y1="30" x2="{0}" y2="{1}" stroke="#eee"/><text x="{0}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(m),
            h - b,
            h - b + 16.0,
            m
        );
        m *= 2.0;
    }
    let mut e = ylo;
    while e <= yhi {
        let v = 10f64.powf(e);
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/><text x="{2}" y="{3}" text-anchor="end">{4}</text>"##,
            y(v),
            w - 20.0,
            l - 6.0,
            y(v) + 4.0,
            v
        );
        e += 1.0;
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">jobs in flight (cleaner concurrency)</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">changes/s (log)</text>"#,
        (w + l) / 2.0,
        h - 10.0,
        h / 2.0,
        h / 2.0
    );
    for (i, set) in r.settings.iter().enumerate() {
        let c = colors[i % colors.len()];
        let pts: Vec<String> = set
            .pipeline
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.in_flight as f64), y(p.changes_per_s)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
            pts.join(" ")
        );
        for p in &set.pipeline {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                x(p.in_flight as f64),
                y(p.changes_per_s)
            );
        }
        let by = y(set.baseline.changes_per_s);
        let _ = write!(
            s,
            r#"<line x1="{l}" y1="{by:.1}" x2="{}" y2="{by:.1}" stroke="{c}" stroke-dasharray="5,4"/>"#,
            w - 20.0
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" fill="{c}">{} (best {:.0}x sequential)</text>"#,
            l + 10.0,
            40.0 + 16.0 * i as f64,
            set.name,
            set.best_ratio
        );
    }
    s.push_str("</svg>\n");
    s
}
