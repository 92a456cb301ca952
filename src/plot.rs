//! Small line charts written as PNG (training curves, the reproduction's accuracy-vs-compute
//! plot). Self-contained: an 8x8 bitmap font, no system fonts, so it works on any machine.

use std::path::Path;

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

use crate::checkpoint::atomic::atomic_write;
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw markers at the points (for few points).
    pub markers: bool,
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

const PANEL_W: u32 = 560;
const PANEL_H: u32 = 400;

/// Renders charts side by side into one PNG at `path` (written atomically).
pub fn render(charts: &[Chart], path: &Path) -> Result<()> {
    let w = PANEL_W * charts.len().max(1) as u32;
    let mut img = RgbImage::from_pixel(w, PANEL_H, Rgb([255, 255, 255]));
    for (i, c) in charts.iter().enumerate() {
        draw_chart(&mut img, c, i as u32 * PANEL_W);
    }
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::Backend(format!("PNG encoding: {e}")))?;
    atomic_write(path, &bytes)
}

fn draw_chart(img: &mut RgbImage, c: &Chart, x0: u32) {
    let (left, right, top, bottom) = (x0 + 64, x0 + PANEL_W - 16, 30u32, PANEL_H - 48);
    text(
        img,
        x0 + (PANEL_W - 8 * c.title.len() as u32) / 2,
        8,
        &c.title,
        [0, 0, 0],
    );
    let pts: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if pts.is_empty() {
        return;
    }
    let (mut xmin, mut xmax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut ymin, mut ymax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if xmax - xmin < 1e-12 {
        xmin -= 0.5;
        xmax += 0.5;
    }
    // Room at both ends so that markers on the edges stay visible.
    let xpad = (xmax - xmin) * 0.04;
    xmin -= xpad;
    xmax += xpad;
    let pad = ((ymax - ymin) * 0.05).max(1e-6);
    ymin -= pad;
    ymax += pad;
    let sx = |x: f64| left as f64 + (x - xmin) / (xmax - xmin) * (right - left) as f64;
    let sy = |y: f64| bottom as f64 - (y - ymin) / (ymax - ymin) * (bottom - top) as f64;
    // Grid and ticks.
    for k in 0..=4 {
        let fy = ymin + (ymax - ymin) * k as f64 / 4.0;
        let py = sy(fy) as u32;
        line(
            img,
            left as f64,
            py as f64,
            right as f64,
            py as f64,
            [230, 230, 230],
        );
        let label = tick(fy);
        text(
            img,
            left.saturating_sub(8 * label.len() as u32 + 4),
            py.saturating_sub(4),
            &label,
            [60, 60, 60],
        );
        let fx = xmin + (xmax - xmin) * k as f64 / 4.0;
        let px = sx(fx);
        line(img, px, top as f64, px, bottom as f64, [230, 230, 230]);
        let label = tick(fx);
        text(
            img,
            (px as u32).saturating_sub(4 * label.len() as u32),
            bottom + 6,
            &label,
            [60, 60, 60],
        );
    }
    line(
        img,
        left as f64,
        bottom as f64,
        right as f64,
        bottom as f64,
        [0, 0, 0],
    );
    line(
        img,
        left as f64,
        top as f64,
        left as f64,
        bottom as f64,
        [0, 0, 0],
    );
    text(
        img,
        x0 + (PANEL_W - 8 * c.x_label.len() as u32) / 2,
        PANEL_H - 18,
        &c.x_label,
        [0, 0, 0],
    );
    text(img, x0 + 4, top - 14, &c.y_label, [0, 0, 0]);
    for (i, s) in c.series.iter().enumerate() {
        // Colours follow the series' position, so the same series has one colour across panels.
        let col = PALETTE[i % PALETTE.len()];
        if s.points.is_empty() {
            continue;
        }
        for w in s.points.windows(2) {
            line(img, sx(w[0].0), sy(w[0].1), sx(w[1].0), sy(w[1].1), col);
            line(
                img,
                sx(w[0].0),
                sy(w[0].1) + 1.0,
                sx(w[1].0),
                sy(w[1].1) + 1.0,
                col,
            );
        }
        if s.markers || s.points.len() == 1 {
            for p in &s.points {
                for dy in -2..=2 {
                    for dx in -2..=2 {
                        put(img, sx(p.0) as i64 + dx, sy(p.1) as i64 + dy, col);
                    }
                }
            }
        }
        // Legend, bottom-right inside the plot (curves rise, so that corner is usually free).
        let n = c.series.len() as u32;
        let ly = bottom - 8 - 12 * (n - i as u32);
        let lx = right.saturating_sub(8 * s.name.len() as u32 + 28);
        for dx in 0..16 {
            put(img, (lx + dx) as i64, (ly + 3) as i64, col);
            put(img, (lx + dx) as i64, (ly + 4) as i64, col);
        }
        text(img, lx + 20, ly, &s.name, [0, 0, 0]);
    }
}

fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e5 {
        format!("{:.1e}", v)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

fn line(img: &mut RgbImage, x0: f64, y0: f64, x1: f64, y1: f64, c: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for k in 0..=n {
        let t = k as f64 / n as f64;
        put(
            img,
            (x0 + (x1 - x0) * t).round() as i64,
            (y0 + (y1 - y0) * t).round() as i64,
            c,
        );
    }
}

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, c: [u8; 3]) {
    for (i, ch) in s.chars().enumerate() {
        if let Some(glyph) = font8x8::BASIC_FONTS.get(ch) {
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        put(
                            img,
                            (x + 8 * i as u32 + col) as i64,
                            (y + row as u32) as i64,
                            c,
                        );
                    }
                }
            }
        }
    }
}
