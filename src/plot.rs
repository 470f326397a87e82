//! Loss curves of a run as a PNG, drawn from its `metrics.jsonl`.
//!
//! ```text
//!  metrics.jsonl ─read_metrics─▶ Metrics (curves: loss, terms; monitors: knn…; lr) ─draw─▶ RGB ─▶ PNG
//! ```
//!
//! The top panel has the total loss (black) and every other numeric field except `step`, `lr`,
//! `seconds`, the `*_s` timings and the monitors, each as faint raw values under a centred
//! moving average; its y axis is logarithmic when every value is positive and they span more
//! than a decade. The monitors (online kNN accuracy, RankMe and embedding std, on scales of
//! their own) get one small panel each below it, and a bottom panel shows the learning rate. Text uses an embedded font (Liberation Sans,
//! assets/fonts) through `ab_glyph`, so no system font library is needed. Lines that are not
//! a JSON object with a numeric `step` (the truncated last line of a killed run) are skipped.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Width of the picture, pixels.
pub const WIDTH: u32 = 1200;
/// Height of the picture, pixels.
pub const HEIGHT: u32 = 800;
/// Height of the learning-rate panel, pixels.
const LR_HEIGHT: u32 = 200;
/// Height of the monitors' row, pixels.
const MONITOR_HEIGHT: u32 = 220;
/// Fields drawn in panels of their own, not on the loss axis: the online kNN accuracy and the
/// collapse indicators.
pub const MONITORS: [&str; 3] = ["knn", "rankme", "emb_std"];

/// The embedded font (SIL OFL 1.1, see assets/fonts/LICENSE-LiberationSans.txt).
static FONT: &[u8] = include_bytes!("../assets/fonts/LiberationSans-Regular.ttf");
/// The family name the font is registered under.
const FAMILY: &str = "sans-serif";

/// Why no plot was written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The metrics file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No line of the file had a step and a finite loss or term value.
    #[error("{}: no metrics to plot", .0.display())]
    NoData(PathBuf),
    /// Drawing failed.
    #[error("cannot draw the plot: {0}")]
    Draw(String),
    /// The PNG could not be written.
    #[error("cannot write {}: {msg}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        msg: String,
    },
}

/// One named series of (step, value) points, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The field name (`loss`, a term, `knn`…).
    pub name: String,
    /// (step, value) pairs; only finite values.
    pub points: Vec<(f64, f64)>,
}

/// What a metrics file holds for plotting.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metrics {
    /// `loss` first (when present), then the other fields in order of first appearance.
    pub curves: Vec<Curve>,
    /// The [`MONITORS`] present, in that order.
    pub monitors: Vec<Curve>,
    /// The learning rate per step.
    pub lr: Vec<(f64, f64)>,
}

/// Whether field `key` is plotted as a curve (not the step, learning rate or a timing).
fn is_curve(key: &str) -> bool {
    !matches!(key, "step" | "lr" | "seconds") && !key.ends_with("_s")
}

/// A JSON object's fields in file order (`serde_json::Map` sorts them).
struct Fields(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Fields, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = a.next_entry()? {
                    v.push(kv);
                }
                Ok(Fields(v))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Parses metrics lines, skipping those that are not a JSON object with a numeric `step`,
/// and non-numeric or non-finite values.
pub fn parse_metrics(text: &str) -> Metrics {
    let mut m = Metrics::default();
    for line in text.lines() {
        let Ok(Fields(obj)) = serde_json::from_str(line) else {
            continue;
        };
        let step = obj
            .iter()
            .find(|(k, _)| k == "step")
            .map(|(_, v)| v.as_f64());
        let Some(Some(step)) = step else {
            continue;
        };
        for (key, value) in &obj {
            let Some(v) = value.as_f64().filter(|v| v.is_finite()) else {
                continue;
            };
            if key == "lr" {
                m.lr.push((step, v));
            } else if is_curve(key) {
                let list = if MONITORS.contains(&key.as_str()) {
                    &mut m.monitors
                } else {
                    &mut m.curves
                };
                match list.iter_mut().find(|c| &c.name == key) {
                    Some(c) => c.points.push((step, v)),
                    None => list.push(Curve {
                        name: key.clone(),
                        points: vec![(step, v)],
                    }),
                }
            }
        }
    }
    if let Some(i) = m.curves.iter().position(|c| c.name == "loss") {
        let loss = m.curves.remove(i);
        m.curves.insert(0, loss);
    }
    m.monitors
        .sort_by_key(|c| MONITORS.iter().position(|k| *k == c.name));
    m
}

/// A centred moving average over `window` points (fewer at the ends).
pub fn smooth(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let half = window / 2;
    let mut prefix = Vec::with_capacity(points.len() + 1);
    prefix.push(0.0);
    for (_, y) in points {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + y);
    }
    (0..points.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(points.len()));
            (points[i].0, (prefix[b] - prefix[a]) / (b - a) as f64)
        })
        .collect()
}

/// The smoothing window for `n` points: about 1/25 of the run, odd, 1 for short runs.
fn window(n: usize) -> usize {
    (n / 25) | 1
}

/// `lo..hi` with room around it (and a non-empty span).
fn padded(lo: f64, hi: f64, log: bool) -> Range<f64> {
    if log {
        let (a, b) = (lo.log10(), hi.log10());
        let pad = ((b - a) * 0.05).max(0.05);
        10f64.powf(a - pad)..10f64.powf(b + pad)
    } else {
        let pad = ((hi - lo) * 0.05)
            .max(hi.abs().max(lo.abs()) * 0.05)
            .max(1e-12);
        lo - pad..hi + pad
    }
}

/// Smallest and largest value of `f` over `points` (`None` when empty).
fn extent(points: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    points.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((a, b)) => Some((a.min(v), b.max(v))),
    })
}

/// An axis label: at most 4 decimals without trailing zeros (`200`, `0.25`, `-0.485`), or
/// scientific notation for magnitudes below 10⁻³ or from 10⁵ (`2.5e-4`).
pub fn tick(v: &f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The colour of curve `i` (the total loss is black).
fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(0, 0, 0),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    PALETTE[i % PALETTE.len()]
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Registers the embedded font once.
fn font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError::Draw("the embedded font does not parse".into()))
    }
}

/// Draws the curves on `area` with y coordinate `y` (linear or logarithmic), titled `title`
/// (none when empty), the y axis named `y_desc`, colours from palette index `first_colour`.
fn loss_panel<DB, Y>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x: Range<f64>,
    y: Y,
    (y_desc, first_colour): (&str, usize),
    curves: &[Curve],
) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut builder = ChartBuilder::on(area);
    if !title.is_empty() {
        builder.caption(title, (FAMILY, 22));
    }
    let mut chart = builder
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&tick)
        .y_desc(y_desc)
        .y_label_formatter(&tick)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_err)?;
    for (i, c) in curves.iter().enumerate() {
        let col = colour(i + first_colour);
        let width = if c.name == "loss" { 3 } else { 2 };
        if c.points.len() < 25 {
            // Few points (an evaluation every N epochs): raw values with markers.
            chart
                .draw_series(LineSeries::new(
                    c.points.iter().copied(),
                    col.stroke_width(2),
                ))
                .map_err(draw_err)?;
            chart
                .draw_series(c.points.iter().map(|&p| Circle::new(p, 4, col.filled())))
                .map_err(draw_err)?
                .label(c.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3))
                });
        } else {
            chart
                .draw_series(LineSeries::new(
                    c.points.iter().copied(),
                    col.mix(0.2).stroke_width(1),
                ))
                .map_err(draw_err)?;
            chart
                .draw_series(LineSeries::new(
                    smooth(&c.points, window(c.points.len())),
                    col.stroke_width(width),
                ))
                .map_err(draw_err)?
                .label(c.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3))
                });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(draw_err)
}

/// Draws the learning rate on `area`.
fn lr_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: Range<f64>,
    lr: &[(f64, f64)],
) -> Result<(), PlotError> {
    let (lo, hi) = extent(lr.iter().map(|p| p.1)).unwrap_or((0.0, 1.0));
    let y = padded(lo.min(0.0), hi, false);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d::<RangedCoordf64, RangedCoordf64>(x.into(), y.into())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&tick)
        .y_desc("lr")
        .y_labels(4)
        .y_label_formatter(&|v| {
            if v.abs() < 1e-15 {
                "0".into()
            } else {
                format!("{v:.1e}")
            }
        })
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(
            lr.iter().copied(),
            RGBColor(31, 119, 180).stroke_width(2),
        ))
        .map_err(draw_err)?;
    Ok(())
}

/// Renders `m` as `WIDTH × HEIGHT` RGB pixels, titled `title`.
pub fn render(m: &Metrics, title: &str) -> Result<Vec<u8>, PlotError> {
    font()?;
    let steps = m
        .curves
        .iter()
        .flat_map(|c| c.points.iter())
        .chain(m.monitors.iter().flat_map(|c| c.points.iter()))
        .chain(&m.lr)
        .map(|p| p.0);
    let Some((x0, x1)) = extent(steps) else {
        return Err(PlotError::Draw("no points".into()));
    };
    let x = if x1 > x0 { x0..x1 } else { x0 - 1.0..x1 + 1.0 };
    let (lo, hi) = extent(m.curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)))
        .ok_or_else(|| PlotError::Draw("no curves".into()))?;
    let log = lo > 0.0 && hi / lo > 10.0;

    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (top, bottom) = if m.lr.is_empty() {
            (root.clone(), None)
        } else {
            let (t, b) = root.split_vertically(HEIGHT - LR_HEIGHT);
            (t, Some(b))
        };
        let (top, monitors) = if m.monitors.is_empty() {
            (top, None)
        } else {
            let h = top.dim_in_pixel().1;
            let (t, b) = top.split_vertically(h.saturating_sub(MONITOR_HEIGHT));
            (t, Some(b))
        };
        let y = padded(lo, hi, log);
        if log {
            loss_panel(
                &top,
                title,
                x.clone(),
                y.log_scale(),
                ("loss", 0),
                &m.curves,
            )?;
        } else {
            let y: RangedCoordf64 = y.into();
            loss_panel(&top, title, x.clone(), y, ("loss", 0), &m.curves)?;
        }
        if let Some(row) = monitors {
            let panels = row.split_evenly((1, m.monitors.len()));
            for (i, (area, c)) in panels.iter().zip(&m.monitors).enumerate() {
                let (lo, hi) = extent(c.points.iter().map(|p| p.1)).unwrap_or((0.0, 1.0));
                let y: RangedCoordf64 = padded(lo, hi, false).into();
                let first = m.curves.len() + i;
                loss_panel(
                    area,
                    "",
                    x.clone(),
                    y,
                    (&c.name, first),
                    std::slice::from_ref(c),
                )?;
            }
        }
        if let Some(b) = bottom {
            lr_panel(&b, x, &m.lr)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

/// Reads `metrics_jsonl` and writes its loss curves to `out_png` (atomically: a temporary
/// file in the same directory, then a rename).
pub fn write_plots(metrics_jsonl: &Path, out_png: &Path) -> Result<(), PlotError> {
    let text = std::fs::read_to_string(metrics_jsonl).map_err(|source| PlotError::Read {
        path: metrics_jsonl.to_path_buf(),
        source,
    })?;
    let m = parse_metrics(&text);
    if m.curves.is_empty() && m.monitors.is_empty() {
        return Err(PlotError::NoData(metrics_jsonl.to_path_buf()));
    }
    let title = metrics_jsonl
        .parent()
        .and_then(Path::file_name)
        .map_or_else(
            || "training".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
    let pixels = render(&m, &title)?;
    let write_err = |msg: String| PlotError::Write {
        path: out_png.to_path_buf(),
        msg,
    };
    let name = out_png
        .file_name()
        .ok_or_else(|| write_err("not a file name".into()))?;
    let tmp = out_png.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let img = image::RgbImage::from_raw(WIDTH, HEIGHT, pixels)
        .ok_or_else(|| write_err("pixel buffer of the wrong size".into()))?;
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| write_err(e.to_string()))?;
    std::fs::rename(&tmp, out_png).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_err(e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("canc-plot-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `n` steps of a decaying three-term loss with noise, a warm-up + cosine lr, a kNN
    /// accuracy every 100 steps and a truncated last line.
    fn metrics(n: u64) -> String {
        let mut s = String::new();
        let mut r: u64 = 1;
        for step in 0..n {
            r = r.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let noise = 1.0 + 0.2 * ((r >> 40) as f64 / (1u64 << 24) as f64 - 0.5);
            let t = step as f64 / n as f64;
            let (nce, mae, den) = (
                4.0 * (-2.0 * t).exp() * noise,
                1.0 * (-3.0 * t).exp() * noise,
                0.01 * noise,
            );
            let lr = if step < 50 {
                1e-3 * step as f64 / 50.0
            } else {
                1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            };
            let loss = 0.03 * nce + 0.67 * mae + 0.3 * den;
            s += &format!(
                "{{\"step\":{step},\"loss\":{loss},\"nce\":{nce},\"mae\":{mae},\"denoise\":{den},\
                 \"lr\":{lr},\"seconds\":0.5,\"data_s\":0.01,\"forward_s\":0.2,\
                 \"backward_s\":0.25,\"optimizer_s\":0.04}}\n"
            );
            if step % 10 == 0 {
                let rank = 20.0 + step as f64 / 50.0;
                s += &format!("{{\"step\":{step},\"emb_std\":0.06,\"rankme\":{rank}}}\n");
            }
            if step % 100 == 99 {
                let knn = [0.6, 0.7, 0.8, 0.82, 0.84, 0.85, 0.86, 0.87, 0.88, 0.89];
                s += &format!(
                    "{{\"step\":{step},\"knn\":{}}}\n",
                    knn[(step / 100) as usize % 10]
                );
            }
        }
        s + "{\"step\":1000,\"loss\":0.4,\"nc"
    }

    #[test]
    fn parses_curves_and_skips_bad_lines() {
        let m = parse_metrics(&metrics(300));
        let names: Vec<&str> = m.curves.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["loss", "nce", "mae", "denoise"]);
        assert_eq!(m.curves[0].points.len(), 300);
        let names: Vec<&str> = m.monitors.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["knn", "rankme", "emb_std"]);
        assert_eq!(
            m.monitors[0].points,
            vec![(99.0, 0.6), (199.0, 0.7), (299.0, 0.8)]
        );
        assert_eq!(m.monitors[1].points.len(), 30);
        assert_eq!(m.lr.len(), 300);
        assert_eq!(m.lr[25], (25.0, 5e-4));
        let m = parse_metrics("{\"loss\":1}\n[1,2]\nnot json\n{\"step\":\"x\",\"loss\":1}\n");
        assert_eq!(m, Metrics::default());
        let m = parse_metrics("{\"step\":3,\"sigma\":\"high\",\"b\":null,\"a\":2.5}");
        assert_eq!(m.curves.len(), 1);
        assert_eq!(m.curves[0].points, vec![(3.0, 2.5)]);
    }

    #[test]
    fn tick_labels() {
        let labels: Vec<String> = [
            0.0, -1e-17, 200.0, 0.25, -0.485, 1.0, 0.01, 2.5e-4, 1e6, 0.00125,
        ]
        .iter()
        .map(tick)
        .collect();
        assert_eq!(
            labels,
            [
                "0", "0", "200", "0.25", "-0.485", "1", "0.01", "2.5e-4", "1.0e6", "0.0013"
            ]
        );
    }

    #[test]
    fn smoothing_is_a_centred_mean() {
        let p: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, (i * i) as f64)).collect();
        let s = smooth(&p, 3);
        // (0+1)/2, (0+1+4)/3, (1+4+9)/3, (4+9+16)/3, (9+16)/2
        let want = [0.5, 5.0 / 3.0, 14.0 / 3.0, 29.0 / 3.0, 12.5];
        for ((x, y), (i, w)) in s.iter().zip(want.iter().enumerate()) {
            assert_eq!(*x, i as f64);
            assert!((y - w).abs() < 1e-12, "{y} vs {w}");
        }
        assert_eq!(smooth(&p, 1), p);
        assert_eq!(window(10), 1);
        assert_eq!(window(1000), 41);
    }

    /// Copies `png` to `$CANC_KEEP_PLOTS/name` when that variable is set, to look at it.
    fn keep(png: &Path, name: &str) {
        if let Some(dir) = std::env::var_os("CANC_KEEP_PLOTS") {
            std::fs::copy(png, Path::new(&dir).join(name)).unwrap();
        }
    }

    /// How many pixels of `img` are exactly `c`.
    fn count(img: &image::RgbImage, c: RGBColor) -> usize {
        img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count()
    }

    #[test]
    fn writes_a_png_of_the_expected_size_with_every_curve() {
        let dir = Scratch::new("png");
        let run = dir.0.join("can-run");
        std::fs::create_dir_all(&run).unwrap();
        let metrics_path = run.join("metrics.jsonl");
        std::fs::write(&metrics_path, metrics(1000)).unwrap();
        let png = run.join("loss.png");
        write_plots(&metrics_path, &png).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        // Each curve's smoothed line is drawn in its solid colour, the monitors' too.
        for i in 0..7 {
            let n = count(&img, colour(i));
            assert!(n > 200, "curve {i}: {n} pixels");
        }
        assert!(!run.join(".loss.png.tmp").exists());
        // Overwriting works (the rename replaces the old file).
        write_plots(&metrics_path, &png).unwrap();
        keep(&png, "loss.png");
    }

    #[test]
    fn linear_axis_and_a_single_point_draw() {
        let dir = Scratch::new("lin");
        let p = dir.0.join("metrics.jsonl");
        // A single negative loss: a linear axis around one point, no lr panel.
        std::fs::write(&p, "{\"step\":0,\"loss\":-0.5}\n").unwrap();
        let png = dir.0.join("one.png");
        write_plots(&p, &png).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        assert!(count(&img, colour(0)) > 20, "the point's marker is drawn");
        keep(&png, "one.png");
        // A loss crossing zero over 40 steps (linear axis), with an lr.
        let text: String = (0..40)
            .map(|s| {
                format!(
                    "{{\"step\":{s},\"loss\":{},\"lr\":0.1}}\n",
                    s as f64 / 20.0 - 1.0
                )
            })
            .collect();
        std::fs::write(&p, text).unwrap();
        write_plots(&p, &png).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert!(count(&img, colour(0)) > 200);
        keep(&png, "linear.png");
    }

    #[test]
    fn empty_or_missing_files_are_errors() {
        let dir = Scratch::new("empty");
        let p = dir.0.join("metrics.jsonl");
        let png = dir.0.join("loss.png");
        std::fs::write(&p, "").unwrap();
        assert!(matches!(write_plots(&p, &png), Err(PlotError::NoData(_))));
        std::fs::write(&p, "{\"step\":0,\"lo").unwrap();
        assert!(matches!(write_plots(&p, &png), Err(PlotError::NoData(_))));
        // Only timings: nothing to plot.
        std::fs::write(&p, "{\"step\":0,\"lr\":0.1,\"seconds\":1,\"data_s\":0.1}\n").unwrap();
        assert!(matches!(write_plots(&p, &png), Err(PlotError::NoData(_))));
        assert!(!png.exists());
        let missing = dir.0.join("nope.jsonl");
        let e = write_plots(&missing, &png).unwrap_err();
        assert!(matches!(e, PlotError::Read { .. }));
        assert!(e.to_string().contains("nope.jsonl"));
    }
}
