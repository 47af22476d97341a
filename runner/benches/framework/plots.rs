//! The SVG plots beside `docs/benchmarks.md`, drawn with `plotters`' SVG backend (text is
//! written as SVG `<text>`, so no system font is needed).

use std::path::Path;

use plotters::prelude::*;

use crate::R;

/// Line colours, one per series: ten, as many as the most series a plot has (the latency plot:
/// six backends and three peers), so no two lines of a plot share one.
const COLOURS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Series with at most this many points get a marker on each.
const MARKED: usize = 16;

/// One named line.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart of `series` into `path`; `log_x`/`log_y` pick logarithmic axes.
pub fn lines(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    (log_x, log_y): (bool, bool),
) -> R<()> {
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(err(&"no points"));
    }
    // Room around the data; a log axis must stay positive.
    let pad = |lo: f64, hi: f64, log: bool| {
        if log {
            (lo.max(1e-9) / 1.3, hi.max(1e-9) * 1.3)
        } else {
            let d = (hi - lo).max(hi.abs() * 0.1).max(1e-9) * 0.05;
            ((lo - d).min(0.0), hi + d)
        }
    };
    let (x0, x1) = pad(x0, x1, log_x);
    let (y0, y1) = pad(y0, y1, log_y);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    // The four axis kinds are four chart types: one generic drawing routine serves them all.
    macro_rules! draw {
        ($xr:expr, $yr:expr) => {{
            let mut chart = b.build_cartesian_2d($xr, $yr).map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(|e| err(&e))?;
            for (i, s) in series.iter().enumerate() {
                let c = COLOURS[i % COLOURS.len()];
                // Few points: mark each (a series of one point has no line to show).
                if s.points.len() <= MARKED {
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                        .map_err(|e| err(&e))?;
                }
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    match (log_x, log_y) {
        (false, false) => draw!(x0..x1, y0..y1),
        (true, false) => draw!((x0..x1).log_scale(), y0..y1),
        (false, true) => draw!(x0..x1, (y0..y1).log_scale()),
        (true, true) => draw!((x0..x1).log_scale(), (y0..y1).log_scale()),
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The cumulative distribution of `v` (sorted in place) as `(value, percentile)` points, cut at
/// the 99.5th percentile (the rest is the machine's other work), at most 200 points.
pub fn cdf(v: &mut [f64]) -> Vec<(f64, f64)> {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return Vec::new();
    }
    let last = (n * 995 / 1000).max(1);
    let step = (last / 200).max(1);
    (0..last)
        .step_by(step)
        .map(|i| (v[i], 100.0 * (i + 1) as f64 / n as f64))
        .collect()
}
