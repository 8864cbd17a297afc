//! The timeline as a picture: throughput, lag, and timestamp diff with
//! upstream DNS queries, one panel each, in one SVG file.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Sample;

/// Writes `timeline` to `path` as SVG, titled `title`.
///
/// # Errors
///
/// When the file cannot be written.
pub fn svg(path: &Path, title: &str, timeline: &[Sample]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let panels = root.split_evenly((3, 1));
    let t_max = timeline.last().map_or(1.0, |s| s.t_s).max(1.0);

    let series = |s: &Sample| [s.in_rps, s.out_rps];
    let top = timeline.iter().flat_map(series).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("throughput (records/s)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            timeline.iter().map(|s| (s.t_s, s.in_rps)),
            &BLUE,
        ))
        .map_err(err)?
        .label("in")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(
            timeline.iter().map(|s| (s.t_s, s.out_rps)),
            &RED,
        ))
        .map_err(err)?
        .label("out (enriched)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let lag_top = timeline
        .iter()
        .filter_map(|s| s.lag)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("consumer lag (records)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max, 0.0..lag_top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            timeline
                .iter()
                .filter_map(|s| s.lag.map(|l| (s.t_s, l as f64))),
            &MAGENTA,
        ))
        .map_err(err)?;

    let diff_top = timeline.iter().map(|s| s.ts_diff_s).fold(0.1, f64::max) * 1.1;
    let dns_top = timeline.iter().map(|s| s.dns_qps).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(
            "timestamp diff (s, green) and upstream DNS (q/s, black)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .right_y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max, 0.0..diff_top)
        .map_err(err)?
        .set_secondary_coord(0.0..t_max, 0.0..dns_top);
    chart
        .configure_mesh()
        .x_desc("seconds")
        .draw()
        .map_err(err)?;
    chart.configure_secondary_axes().draw().map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            timeline.iter().map(|s| (s.t_s, s.ts_diff_s)),
            &GREEN,
        ))
        .map_err(err)?;
    chart
        .draw_secondary_series(LineSeries::new(
            timeline.iter().map(|s| (s.t_s, s.dns_qps)),
            &BLACK,
        ))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e}")
}
