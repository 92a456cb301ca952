//! What a segmentation looks like: the predicted mask as an index PNG (one byte per pixel, the
//! class), and an overlay a person can read: the image enlarged, each non-background class
//! tinted in its colour, and a legend naming the classes present. And what a detection looks
//! like: boxes drawn on the image, named and scored.

use std::path::Path;

use crate::checkpoint::atomic::atomic_write;
use crate::error::{Error, Result};

/// Distinct colours for classes 1.. (class 0, the background, is left untinted); they repeat
/// past 20 classes.
const PALETTE: [[u8; 3]; 20] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
    [0, 128, 128],
    [220, 190, 255],
    [170, 110, 40],
    [255, 250, 200],
    [128, 0, 0],
    [170, 255, 195],
    [128, 128, 0],
    [255, 215, 180],
    [0, 0, 128],
    [128, 128, 128],
];

pub fn class_colour(k: usize) -> [u8; 3] {
    PALETTE[(k.max(1) - 1) % PALETTE.len()]
}

/// Writes `h × w` bytes as an 8-bit greyscale PNG: a mask's class indices, or a grey image.
pub fn write_grey_png(path: &Path, values: &[u8], h: usize, w: usize) -> Result<()> {
    let img = image::GrayImage::from_raw(w as u32, h as u32, values.to_vec()).expect("h·w bytes");
    write_png(path, image::DynamicImage::ImageLuma8(img))
}

/// The overlay: `pixels` (`[c, h, w]`, c = 1 or 3) enlarged to about 384 px, classes tinted at
/// half strength, and a legend of the classes present.
pub fn write_overlay(
    path: &Path,
    pixels: &[u8],
    [c, h, w]: [usize; 3],
    mask: &[u8],
    classes: &[String],
) -> Result<()> {
    let scale = (384 / h.max(w)).max(1);
    let (sh, sw) = (h * scale, w * scale);
    let present: Vec<usize> = (1..classes.len())
        .filter(|k| mask.contains(&(*k as u8)))
        .collect();
    let legend_w = 170;
    let (out_w, out_h) = (sw + legend_w, sh.max(24 * present.len() + 16));
    let mut rgb = vec![255u8; out_w * out_h * 3];
    for y in 0..sh {
        for x in 0..sw {
            let (sy, sx) = (y / scale, x / scale);
            let px: [u8; 3] = std::array::from_fn(|ch| pixels[(ch.min(c - 1) * h + sy) * w + sx]);
            let k = mask[sy * w + sx] as usize;
            let col = if k == 0 {
                px
            } else {
                blend(px, class_colour(k))
            };
            rgb[(y * out_w + x) * 3..][..3].copy_from_slice(&col);
        }
    }
    for (row, &k) in present.iter().enumerate() {
        let top = 8 + row * 24;
        fill(&mut rgb, out_w, [sw + 10, top], [16, 16], class_colour(k));
        text(&mut rgb, out_w, out_h, [sw + 34, top], &classes[k]);
    }
    let img = image::RgbImage::from_raw(out_w as u32, out_h as u32, rgb).expect("w·h·3 bytes");
    write_png(path, image::DynamicImage::ImageRgb8(img))
}

/// One box to draw: `(x1, y1, x2, y2)` in the image's pixels, its class index (0-based, no
/// background) and score.
pub struct DrawnBox {
    pub bbox: [f32; 4],
    pub label: usize,
    pub score: f32,
}

/// The image enlarged to about 384 px with each box outlined in its class's colour and
/// labelled with the class's name and score above it (inside, at the top edge).
pub fn write_boxes(
    path: &Path,
    pixels: &[u8],
    [c, h, w]: [usize; 3],
    boxes: &[DrawnBox],
    classes: &[String],
) -> Result<()> {
    let scale = (384 / h.max(w)).max(1);
    let (out_h, out_w) = (h * scale, w * scale);
    let mut rgb = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        for x in 0..out_w {
            let (sy, sx) = (y / scale, x / scale);
            let px: [u8; 3] = std::array::from_fn(|ch| pixels[(ch.min(c - 1) * h + sy) * w + sx]);
            rgb[(y * out_w + x) * 3..][..3].copy_from_slice(&px);
        }
    }
    // Lowest score first, so that the surest boxes are drawn on top; labels after every box,
    // each moved down past the labels already placed so that none hides another.
    let mut order: Vec<&DrawnBox> = boxes.iter().collect();
    order.sort_by(|a, b| a.score.total_cmp(&b.score));
    let at = |v: f32, max: usize| ((v.max(0.0) * scale as f32) as usize).min(max - 1);
    let corners = |b: &DrawnBox| {
        let (x1, y1) = (at(b.bbox[0], out_w), at(b.bbox[1], out_h));
        (
            x1,
            y1,
            at(b.bbox[2], out_w).max(x1),
            at(b.bbox[3], out_h).max(y1),
        )
    };
    for b in &order {
        let (x1, y1, x2, y2) = corners(b);
        let thick = 2.min(x2 - x1 + 1).min(y2 - y1 + 1);
        for (x0, y0, bw, bh) in [
            (x1, y1, x2 - x1 + 1, thick),
            (x1, y2 + 1 - thick, x2 - x1 + 1, thick),
            (x1, y1, thick, y2 - y1 + 1),
            (x2 + 1 - thick, y1, thick, y2 - y1 + 1),
        ] {
            fill(
                &mut rgb,
                out_w,
                [x0, y0],
                [bw, bh],
                class_colour(b.label + 1),
            );
        }
    }
    const LABEL_H: usize = 18;
    let mut placed: Vec<[usize; 4]> = Vec::new();
    for b in order.iter().rev() {
        let (x1, mut y, ..) = corners(b);
        let name = classes.get(b.label).map_or("?", String::as_str);
        let label = format!("{name} {:.2}", b.score);
        let width = crate::plot::layout(&label, 15.0, |_, _, _| {}).0 as usize + 4;
        let w = width.min(out_w - x1);
        let overlaps = |y: usize, r: &[usize; 4]| {
            x1 < r[0] + r[2] && r[0] < x1 + w && y < r[1] + r[3] && r[1] < y + LABEL_H
        };
        while let Some(r) = placed.iter().find(|r| overlaps(y, r)) {
            y = r[1] + r[3];
        }
        if y + LABEL_H > out_h {
            continue;
        }
        let light = blend(class_colour(b.label + 1), [255, 255, 255]);
        fill(&mut rgb, out_w, [x1, y], [w, LABEL_H], light);
        text(&mut rgb, out_w, out_h, [x1 + 2, y + 1], &label);
        placed.push([x1, y, w, LABEL_H]);
    }
    let img = image::RgbImage::from_raw(out_w as u32, out_h as u32, rgb).expect("w·h·3 bytes");
    write_png(path, image::DynamicImage::ImageRgb8(img))
}

fn blend(a: [u8; 3], b: [u8; 3]) -> [u8; 3] {
    std::array::from_fn(|i| ((a[i] as u16 + b[i] as u16) / 2) as u8)
}

fn fill(rgb: &mut [u8], out_w: usize, [x0, y0]: [usize; 2], [w, h]: [usize; 2], col: [u8; 3]) {
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            rgb[(y * out_w + x) * 3..][..3].copy_from_slice(&col);
        }
    }
}

fn text(rgb: &mut [u8], out_w: usize, out_h: usize, [x0, y0]: [usize; 2], s: &str) {
    crate::plot::layout(s, 15.0, |x, y, cov| {
        let (x, y) = (x0 as i32 + x, y0 as i32 - 2 + y);
        if x >= 0 && y >= 0 && (x as usize) < out_w && (y as usize) < out_h {
            let i = (y as usize * out_w + x as usize) * 3;
            for v in &mut rgb[i..i + 3] {
                *v = (*v as f32 * (1.0 - cov.min(1.0))) as u8;
            }
        }
    });
}

fn write_png(path: &Path, img: image::DynamicImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    atomic_write(path, &bytes)
}
