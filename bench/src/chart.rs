//! The load run as a picture: an SVG chart (plotters' SVG backend, text as SVG `<text>`
//! elements, so no font files are read) with one row per scenario and a bar per path
//! (direct, casegate, nginx): requests/s on the left, MB/s on the right, both on
//! logarithmic axes (4 KiB and 32 MiB runs differ by four orders of magnitude).

use std::path::PathBuf;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report;
use crate::Res;

/// One bar: a path's figures in a scenario.
#[derive(Debug, Clone)]
pub struct Bar {
    pub scenario: String,
    pub path: &'static str,
    pub requests_per_s: f64,
    pub megabytes_per_s: f64,
}

/// Where dated charts go (gitignored).
pub fn out_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/out"))
}

/// Writes `svg` to `bench/out/load-YYYY-MM-DD-HHMMSS.svg` and returns that path.
pub fn write_dated(svg: &str) -> Res<PathBuf> {
    let dir = out_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(format!("load-{}.svg", report::now_utc().1));
    std::fs::write(&path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

const PATHS: [&str; 3] = ["direct", "casegate", "nginx"];
const BAR: u32 = 9;
const ROW: u32 = 3 * BAR + 9;
const WIDTH: u32 = 1500;
const HEAD: u32 = 110;
const FOOT: u32 = 50;

fn colour(path: &str) -> RGBColor {
    match path {
        "direct" => RGBColor(150, 150, 150),
        "casegate" => RGBColor(31, 119, 180),
        _ => RGBColor(44, 160, 44),
    }
}

/// The chart of `bars` (in the order given, scenarios as they first appear) as SVG text.
pub fn render(title: &str, bars: &[Bar]) -> Res<String> {
    let mut scenarios: Vec<&str> = Vec::new();
    for bar in bars {
        if !scenarios.contains(&bar.scenario.as_str()) {
            scenarios.push(&bar.scenario);
        }
    }
    let height = HEAD + FOOT + ROW * scenarios.len().max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let root = root
            .titled(title, ("sans-serif", 22).into_font())
            .map_err(draw_error)?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        panel(&left, "requests/s", &scenarios, bars, |b| b.requests_per_s)?;
        panel(&right, "MB/s (file bytes)", &scenarios, bars, |b| {
            b.megabytes_per_s
        })?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

fn draw_error<E: std::fmt::Debug>(e: E) -> String {
    format!("cannot draw the chart: {e:?}")
}

/// One panel: a horizontal bar per path and scenario, `value` on a log axis.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    scenarios: &[&str],
    bars: &[Bar],
    value: impl Fn(&Bar) -> f64,
) -> Res<()> {
    let values: Vec<f64> = bars
        .iter()
        .map(&value)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if values.is_empty() {
        (0.1, 10.0)
    } else {
        (
            10f64.powf((lo / 2.0).log10().floor()),
            10f64.powf((hi * 3.0).log10().ceil()),
        )
    };
    let rows = scenarios.len().max(1);
    // The first scenario on top: row i is drawn around y = rows - 1 - i.
    let y_of = |i: usize| (rows - 1 - i) as f64;
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .caption(caption, ("sans-serif", 18).into_font())
        .x_label_area_size(30)
        .y_label_area_size(200)
        .build_cartesian_2d((lo..hi).log_scale(), -0.5..rows as f64 - 0.5)
        .map_err(draw_error)?;
    let label = |y: &f64| {
        let row = y.round();
        if (y - row).abs() > 0.01 || row < 0.0 {
            return String::new();
        }
        (rows - 1)
            .checked_sub(row as usize)
            .and_then(|i| scenarios.get(i))
            .map_or_else(String::new, |s| (*s).to_owned())
    };
    let number = |x: &f64| short_number(*x);
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows)
        .y_label_formatter(&label)
        .x_label_formatter(&number)
        .label_style(("sans-serif", 12).into_font())
        .draw()
        .map_err(draw_error)?;
    let value_style =
        TextStyle::from(("sans-serif", 10).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (k, path) in PATHS.iter().enumerate() {
        let colour = colour(path);
        let mut rects = Vec::new();
        let mut labels = Vec::new();
        for (i, scenario) in scenarios.iter().enumerate() {
            let Some(bar) = bars
                .iter()
                .find(|b| b.scenario == *scenario && b.path == *path)
            else {
                continue;
            };
            let v = value(bar);
            if !(v.is_finite() && v > 0.0) {
                continue;
            }
            let top = y_of(i) + 0.42 - k as f64 * 0.28;
            let (y0, y1) = (top - 0.26, top);
            rects.push(Rectangle::new([(lo, y0), (v, y1)], colour.filled()));
            labels.push(Text::new(
                short_number(v),
                (v * 1.05, (y0 + y1) / 2.0),
                value_style.clone(),
            ));
        }
        chart
            .draw_series(rects)
            .map_err(draw_error)?
            .label(*path)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
        chart.draw_series(labels).map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13).into_font())
        .draw()
        .map_err(draw_error)?;
    Ok(())
}

/// A figure in at most four significant digits (12345 -> 12.3k).
fn short_number(v: f64) -> String {
    match v {
        v if v >= 10_000.0 => format!("{:.1}k", v / 1000.0),
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v if v >= 1.0 => format!("{v:.2}"),
        v => format!("{v:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars() -> Vec<Bar> {
        let mut bars = Vec::new();
        for (scenario, scale) in [
            ("caseiq->caseiq 4 KiB c=32", 1.0),
            ("tines->tines 32 MiB c=8", 0.01),
        ] {
            for (i, path) in PATHS.iter().enumerate() {
                bars.push(Bar {
                    scenario: scenario.to_owned(),
                    path,
                    requests_per_s: 10_000.0 * scale * (i + 1) as f64,
                    megabytes_per_s: 40.0 * (i + 1) as f64 / scale,
                });
            }
        }
        bars
    }

    #[test]
    fn writes_valid_svg_with_labels() {
        let svg = render("casegate load, test", &bars()).expect("chart");
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
            .collect();
        for expected in [
            "casegate load, test",
            "requests/s",
            "caseiq->caseiq 4 KiB c=32",
            "tines->tines 32 MiB c=8",
            "casegate",
            "nginx",
            "direct",
        ] {
            assert!(
                texts.iter().any(|t| t == expected),
                "no text {expected:?} in {texts:?}"
            );
        }
        // A bar per path and scenario in each panel, on top of the background.
        let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
        assert!(rects >= 2 * bars().len(), "{rects} rects");
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short_number(10_912.0), "10.9k");
        assert_eq!(short_number(5312.4), "5312");
        assert_eq!(short_number(43.44), "43.4");
        assert_eq!(short_number(0.25), "0.250");
    }

    #[test]
    fn an_empty_run_still_draws() {
        let svg = render("nothing", &[]).expect("chart");
        assert!(roxmltree::Document::parse(&svg).is_ok());
    }
}
