//! The latency-versus-load chart: p50, p99 and max request → outcome latency (log scale) against
//! the achieved rate of each sweep point, with the saturated end-to-end rate as a vertical line;
//! an SVG file drawn with `plotters` (its SVG backend only).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::load::Latency;
use crate::sweep::Point;

/// A series: its name, its colour, and which figure of a point's latency it shows.
type Series = (&'static str, RGBColor, fn(&Latency) -> f64);

/// The series drawn.
const SERIES: [Series; 3] = [
    ("p50", RGBColor(31, 119, 180), |l| l.p50),
    ("p99", RGBColor(255, 127, 14), |l| l.p99),
    ("max", RGBColor(214, 39, 40), |l| l.max),
];

/// Draws `points` to an SVG file at `path` (its folder created), titled `title`, with the
/// saturated rate `max_rate` marked.
pub fn draw(path: &Path, title: &str, max_rate: f64, points: &[Point]) -> Result<()> {
    if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    let values = || {
        points
            .iter()
            .flat_map(|p| SERIES.map(|(_, _, pick)| pick(&p.latency)))
    };
    let y_max = values().fold(1.0, f64::max) * 2.0;
    let y_min = values().filter(|v| *v > 0.0).fold(y_max, f64::min).max(0.1) / 2.0;
    let x_max = points.iter().map(|p| p.achieved).fold(max_rate, f64::max) * 1.08;

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("achieved transfers/s (open loop at 10, 50, 90 % of the saturated rate)")
        .y_desc("request → outcome latency, ms (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for (name, colour, pick) in SERIES {
        let at = |p: &Point| (p.achieved, pick(&p.latency).max(y_min));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(at),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new(at(p), 4, colour.filled())),
        )?;
    }
    let saturated = BLACK.mix(0.5);
    chart
        .draw_series(LineSeries::new(
            [(max_rate, y_min), (max_rate, y_max)],
            saturated.stroke_width(1),
        ))?
        .label(format!("saturated end to end: {max_rate:.0}/s"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], saturated));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
