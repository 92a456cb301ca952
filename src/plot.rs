//! Line charts written as PNG (training curves, the reproduction's accuracy plots), drawn with
//! `plotters` in an embedded TrueType font (DejaVu Sans, `assets/fonts/`), so they look the same
//! on any machine and need no system fonts. Ticks fall on round numbers (1, 2, 5 × 10ⁿ), axes
//! carry their labels, and the legend sits beside the plot, where it cannot cover data.

use std::path::Path;
use std::sync::Once;

use ab_glyph::{Font, FontRef, ScaleFont};
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters_backend::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use crate::checkpoint::atomic::atomic_write;
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw markers at the points (for few points).
    pub markers: bool,
    /// Text beside each point (e.g. a model's depth), or none when empty.
    pub labels: Vec<String>,
    /// A dashed line, to tell two kinds of series of one colour apart (grown vs scratch).
    pub dashed: bool,
    /// The palette slot; by default the series' position, so that a series keeps its colour
    /// across panels.
    pub colour: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// One row per group (e.g. an arm of a study): each value (e.g. a seed's accuracy) as a small
/// dot, and their mean as a large one with a bar of ± the sample standard deviation. For final
/// numbers that differ by less than a line chart's axis can show.
#[derive(Clone, Debug)]
pub struct Dots {
    pub title: String,
    pub x_label: String,
    pub rows: Vec<(String, Vec<f64>)>,
}

/// A panel of a figure.
#[derive(Clone, Debug)]
pub enum Panel {
    Lines(Chart),
    Dots(Dots),
}

impl From<Chart> for Panel {
    fn from(c: Chart) -> Self {
        Panel::Lines(c)
    }
}

impl From<Dots> for Panel {
    fn from(d: Dots) -> Self {
        Panel::Dots(d)
    }
}

/// matplotlib's "tab10": distinct for up to eight series, readable on white.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

const PLOT_W: u32 = 620;
const LEGEND_W: u32 = 170;
const PANEL_H: u32 = 440;
const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are compiled in and known to parse; a failure would show as missing text.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

/// Renders panels side by side into one PNG at `path` (written atomically).
pub fn render(charts: &[Panel], path: &Path) -> Result<()> {
    register_font();
    let n = charts.len().max(1) as u32;
    let (w, h) = ((PLOT_W + LEGEND_W) * n, PANEL_H);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    draw(charts, &mut buf, (w, h)).map_err(|e| Error::Backend(format!("plot: {e}")))?;
    let img = image::RgbImage::from_raw(w, h, buf).expect("the buffer is w × h × 3");
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::Backend(format!("PNG encoding: {e}")))?;
    atomic_write(path, &bytes)
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(charts: &[Panel], buf: &mut [u8], size: (u32, u32)) -> DrawResult {
    let root = TextFix(BitMapBackend::with_buffer(buf, size)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, charts.len().max(1)));
    for (panel, chart) in panels.iter().zip(charts) {
        let (plot, legend) = panel.split_horizontally(PLOT_W);
        match chart {
            Panel::Lines(c) => draw_chart(&plot, &legend, c)?,
            Panel::Dots(d) => draw_dots(&plot, &legend, d)?,
        }
    }
    root.present()?;
    Ok(())
}

fn draw_dots<DB: DrawingBackend>(
    plot: &DrawingArea<DB, plotters::coord::Shift>,
    legend: &DrawingArea<DB, plotters::coord::Shift>,
    d: &Dots,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let n = d.rows.len();
    let stats: Vec<(f64, f64)> = d.rows.iter().map(|(_, v)| mean_std(v)).collect();
    let x = padded(
        d.rows
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .chain(stats.iter().flat_map(|&(m, s)| [m - s, m + s]))
            .filter(|v| v.is_finite()),
        0.08,
    );
    // The first row on top.
    let row_y = |i: usize| (n - 1 - i) as f64;
    let mut chart = ChartBuilder::on(plot)
        .caption(&d.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(110)
        .build_cartesian_2d(x.0..x.1, -0.6..(n as f64 - 0.4))?;
    let names: Vec<&str> = d.rows.iter().map(|(name, _)| name.as_str()).collect();
    chart
        .configure_mesh()
        .x_desc(&d.x_label)
        .x_labels(7)
        .x_label_formatter(&|v| tick(*v, tick_decimals(x, 7)))
        // One label per row, at the row (a step of 1 over this range gives n ticks).
        .y_labels(n.max(1))
        .y_label_formatter(&|v| {
            let k = v.round();
            if (v - k).abs() > 1e-6 || k < 0.0 || k >= n as f64 {
                return String::new();
            }
            names[n - 1 - k as usize].to_string()
        })
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .disable_y_mesh()
        .draw()?;
    for (i, ((_, values), &(m, s))) in d.rows.iter().zip(&stats).enumerate() {
        let col = PALETTE[i % PALETTE.len()];
        let y = row_y(i);
        if values.len() > 1 {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(m - s, y), (m + s, y)],
                Color::stroke_width(&col, 2),
            )))?;
        }
        chart.draw_series(
            values
                .iter()
                .map(|&v| Circle::new((v, y), 3, col.mix(0.5).filled())),
        )?;
        chart.draw_series(std::iter::once(Circle::new((m, y), 6, col.filled())))?;
    }
    let gray = RGBColor(90, 90, 90);
    let label = |text: &'static str, y: i32| {
        Text::new(text, (38, y - 9), (FONT, 15).into_font().color(&BLACK))
    };
    legend.draw(&Circle::new((17, 60), 3, gray.mix(0.5).filled()))?;
    legend.draw(&label("each seed", 60))?;
    legend.draw(&Circle::new((17, 86), 6, gray.filled()))?;
    legend.draw(&label("mean", 86))?;
    legend.draw(&PathElement::new(
        vec![(4, 112), (30, 112)],
        Color::stroke_width(&gray, 2),
    ))?;
    legend.draw(&label("± std", 112))?;
    Ok(())
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, 0.0);
    }
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, s)
}

fn draw_chart<DB: DrawingBackend>(
    plot: &DrawingArea<DB, plotters::coord::Shift>,
    legend: &DrawingArea<DB, plotters::coord::Shift>,
    c: &Chart,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let pts: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let (x, y) = (
        padded(pts.iter().map(|p| p.0), 0.03),
        padded(pts.iter().map(|p| p.1), 0.06),
    );
    // Epochs and other counts: ticks on whole numbers only.
    let whole = !pts.is_empty() && pts.iter().all(|p| p.0.fract() == 0.0);
    let x_ticks = if whole {
        ((x.1 - x.0).floor() as usize + 1).clamp(2, 7)
    } else {
        7
    };
    let mut chart = ChartBuilder::on(plot)
        .caption(&c.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_labels(x_ticks)
        .y_labels(7)
        .x_label_formatter(&|v| tick(*v, tick_decimals(x, x_ticks)))
        .y_label_formatter(&|v| tick(*v, tick_decimals(y, 7)))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .draw()?;
    let mut row = 0;
    for (i, s) in c.series.iter().enumerate() {
        let col = PALETTE[s.colour.unwrap_or(i) % PALETTE.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        if points.is_empty() {
            continue;
        }
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(
                points.clone(),
                7,
                5,
                Color::stroke_width(&col, 2),
            ))?;
        } else {
            chart.draw_series(LineSeries::new(
                points.clone(),
                Color::stroke_width(&col, 2),
            ))?;
        }
        if s.markers || points.len() == 1 {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, col.filled())))?;
        }
        // Labels sit clear of the marker: to its right, or to its left near the right edge,
        // where they would be cut off; above and below in turn, so that neighbours close
        // together on the x axis do not write over each other.
        let label_style = (FONT, 13).into_font().color(&col);
        for (k, (&p, text)) in s.points.iter().zip(&s.labels).enumerate() {
            if p.0.is_finite() && p.1.is_finite() {
                let dy = if k % 2 == 0 { -18 } else { 7 };
                let (dx, h) = if p.0 > x.0 + 0.75 * (x.1 - x.0) {
                    (-7, HPos::Right)
                } else {
                    (7, HPos::Left)
                };
                let style = label_style.clone().pos(Pos::new(h, VPos::Top));
                chart.draw_series(std::iter::once(
                    EmptyElement::at(p) + Text::new(text.clone(), (dx, dy), style),
                ))?;
            }
        }
        let ly = 60 + 26 * row;
        let swatch: &[(i32, i32)] = if s.dashed {
            &[(4, 12), (22, 30)]
        } else {
            &[(4, 30)]
        };
        for &(a, b) in swatch {
            legend.draw(&PathElement::new(
                vec![(a, ly), (b, ly)],
                Color::stroke_width(&col, 3),
            ))?;
        }
        legend.draw(&Circle::new((17, ly), 4, col.filled()))?;
        legend.draw(&Text::new(
            s.name.clone(),
            (38, ly - 9),
            (FONT, 15).into_font().color(&BLACK),
        ))?;
        row += 1;
    }
    Ok(())
}

/// The bitmap backend with its own text drawing. plotters 0.3.7's ab_glyph text places each
/// glyph's bitmap at the pen position without the glyph's left side bearing, which spreads
/// letters unevenly ("ep och"); here glyphs go where the font's metrics and kerning put them.
struct TextFix<'a>(BitMapBackend<'a>);

type BackendResult<'a> =
    std::result::Result<(), DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>;

/// Width and height of `text` at `size` px, and the glyphs' pixels (x, y, coverage) with the
/// top-left of the text box at (0, 0).
pub(crate) fn layout(text: &str, size: f32, mut pixel: impl FnMut(i32, i32, f32)) -> (f32, f32) {
    let font = FontRef::try_from_slice(FONT_BYTES).expect("the embedded font parses");
    let font = font.as_scaled(size);
    let mut caret = 0.0f32;
    let mut prev = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            caret += font.kern(p, id);
        }
        let glyph = id.with_scale_and_position(size, ab_glyph::point(caret, font.ascent()));
        if let Some(outline) = font.outline_glyph(glyph) {
            let b = outline.px_bounds();
            outline
                .draw(|x, y, cov| pixel(b.min.x as i32 + x as i32, b.min.y as i32 + y as i32, cov));
        }
        caret += font.h_advance(id);
        prev = Some(id);
    }
    (caret, font.ascent() - font.descent())
}

impl<'a> DrawingBackend for TextFix<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> BackendResult<'a> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> BackendResult<'a> {
        self.0.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> BackendResult<'a> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> BackendResult<'a> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> BackendResult<'a> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> BackendResult<'a> {
        self.0.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> BackendResult<'a> {
        self.0.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> BackendResult<'a> {
        self.0.fill_polygon(vert, style)
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> BackendResult<'a> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size() as f32;
        let (width, height) = layout(text, size, |_, _, _| {});
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width.round() as i32,
            HPos::Center => -(width / 2.0).round() as i32,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -(height / 2.0).round() as i32,
            VPos::Bottom => -height.round() as i32,
        };
        let trans = style.transform();
        let (w, h) = self.get_size();
        let mut pixels = Vec::new();
        layout(text, size, |x, y, cov| pixels.push((x, y, cov)));
        for (x, y, cov) in pixels {
            let (x, y) = trans.transform(x + dx, y + dy);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && x < w as i32 && y >= 0 && y < h as i32 && cov > 0.0 {
                let c = BackendColor {
                    alpha: color.alpha * cov.min(1.0) as f64,
                    rgb: color.rgb,
                };
                self.0.draw_pixel((x, y), c)?;
            }
        }
        Ok(())
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> std::result::Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (w, h) = layout(text, style.size() as f32, |_, _, _| {});
        Ok((w.ceil() as u32, h.ceil() as u32))
    }
}

/// The range of `values` widened by `frac` of its span on each side (markers on the edges stay
/// visible); a single value gets ±10% of itself. Counts, sizes and accuracies are never
/// negative, so positive data never gets an axis below zero. Data that reaches zero keeps its
/// margin (a marker at zero would be half cut off by the axis); the margin is narrower than
/// any tick step, so no negative tick is labelled.
fn padded(values: impl Iterator<Item = f64>, frac: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let (a, b) = if span < 1e-12 * hi.abs().max(1.0) {
        let w = if hi.abs() > 0.0 { 0.1 * hi.abs() } else { 0.5 };
        (lo - w, hi + w)
    } else {
        (lo - span * frac, hi + span * frac)
    };
    if lo > 0.0 {
        (a.max(0.0), b)
    } else {
        (a, b)
    }
}

/// Decimals for every tick label of an axis over `range` with at most `labels` ticks: those of
/// the step plotters takes (the smallest of 1, 2 or 5 × 10^k that gives at most `labels`
/// ticks), so that an axis reads 0.5, 1.0, 1.5 and not 0.5, 1, 1.5.
fn tick_decimals((lo, hi): (f64, f64), labels: usize) -> usize {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return 0;
    }
    let count = |step: f64| (hi / step).floor() - (lo / step).ceil() + 1.0;
    let decimals = |step: f64| (-(step.log10() + 1e-9).floor()).max(0.0) as usize;
    // From a step wider than the axis down, as plotters searches: the last one that fits.
    let top = span.log10().ceil() as i32 + 1;
    let mut fits = 10f64.powi(top);
    for k in (top - 15..=top).rev() {
        for m in [5.0, 2.0, 1.0] {
            let step = m * 10f64.powi(k);
            if count(step) > labels.max(1) as f64 {
                return decimals(fits);
            }
            fits = step;
        }
    }
    decimals(fits)
}

/// A tick label with `decimals` digits after the point where that writes the value exactly,
/// otherwise with no more digits than the value has: 0.3, 12, 2.5, 60000.
fn tick(v: f64, decimals: usize) -> String {
    if v.abs() >= 1e6 {
        return format!("{v:.1e}");
    }
    let fixed = format!("{v:.decimals$}");
    let exact = fixed
        .parse::<f64>()
        .is_ok_and(|f| (f - v).abs() <= 1e-9 * v.abs().max(1.0));
    let s = if exact {
        fixed
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    // A zero that float error left a hair below 0 has no sign.
    match s.strip_prefix('-') {
        Some(rest) if rest.parse::<f64>() == Ok(0.0) => rest.to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_data_keeps_its_axis_non_negative_and_zero_keeps_its_margin() {
        assert_eq!(padded([0.192].into_iter(), 0.03).0, 0.192 - 0.0192);
        assert_eq!(padded([0.1, 10.0].into_iter(), 0.03).0, 0.0);
        assert_eq!(padded([0.0, 10.0].into_iter(), 0.03).0, -0.3);
        assert!(padded([-1.0, 10.0].into_iter(), 0.03).0 < -1.0);
    }

    #[test]
    fn ticks_are_short_and_alike_along_an_axis() {
        assert_eq!(tick(0.30000000000000004, 1), "0.3");
        assert_eq!(tick(12.0, 0), "12");
        assert_eq!(tick(-0.0, 0), "0");
        assert_eq!(tick(-0.0, 1), "0.0");
        assert_eq!(tick(2.5, 1), "2.5");
        assert_eq!(tick(60000.0, 0), "60000");
        assert_eq!(tick(1.0, 1), "1.0");
        // A value the decimals cannot write is not rounded to a wrong label.
        assert_eq!(tick(0.25, 1), "0.25");
        // The loss axis of a run's curves: 0.5, 1.0, 1.5.
        assert_eq!(tick_decimals((0.28, 1.8), 7), 1);
        assert_eq!(tick_decimals((52.0, 92.0), 7), 0);
        assert_eq!(tick_decimals((0.0, 1650.0), 7), 0);
        assert_eq!(tick_decimals((0.001, 0.0042), 7), 4);
        assert_eq!(tick_decimals((3.0, 3.0), 7), 0);
    }

    #[test]
    fn renders_a_png() {
        let dir = std::env::temp_dir().join(format!("scalenet-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chart = Chart {
            title: "t".into(),
            x_label: "epoch".into(),
            y_label: "top-1 %".into(),
            series: vec![
                Series {
                    name: "a".into(),
                    points: vec![(1.0, 50.0), (2.0, 61.5), (3.0, 70.25)],
                    markers: true,
                    ..Series::default()
                },
                Series {
                    name: "empty".into(),
                    ..Series::default()
                },
                Series {
                    name: "b".into(),
                    points: vec![(1.0, 40.0), (3.0, 60.0)],
                    markers: true,
                    labels: vec!["6 blocks".into(), "8 blocks".into()],
                    dashed: true,
                    colour: Some(0),
                },
            ],
        };
        let path = dir.join("p.png");
        let dots = Dots {
            title: "final".into(),
            x_label: "top-1 %".into(),
            rows: vec![
                ("grown".into(), vec![89.68, 89.96, 89.91]),
                ("base".into(), vec![89.15]),
            ],
        };
        render(&[chart.clone().into(), chart.into(), dots.into()], &path).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!(img.width(), 3 * (PLOT_W + LEGEND_W));
    }
}
