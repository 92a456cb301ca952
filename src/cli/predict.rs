use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use scalenet::checkpoint::load_model;
use scalenet::data::transform::Transform;
use scalenet::data::{folder, RawImage, FMNIST_CLASSES};
use scalenet::device::DEVICE_HELP;
use scalenet::model::weights::to_vec;

#[derive(clap::Args, Debug)]
pub struct Args {
    model_dir: PathBuf,
    /// JPEG or PNG files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Segmentation models: where each image's mask (`<name>_mask.png`, class indices) and
    /// overlay (`<name>_overlay.png`) go; detectors: the image with its boxes drawn
    /// (`<name>_boxes.png`) and the detections as COCO results (`<name>_detections.json`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Detectors: the least score a box needs to be drawn and printed (the JSON holds every
    /// detection the model keeps).
    #[arg(long, default_value_t = 0.3)]
    min_score: f32,
    /// Segmentation models: whole (each image resized to the model's input) or slide[:STRIDE]
    /// (resized keeping its proportions until it covers the input, then windows of the input's
    /// size every STRIDE pixels, default ⅔ of a window; mmsegmentation's two test modes).
    #[arg(long, default_value = "whole")]
    mode: scalenet::train::seg_infer::SegMode,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    if scalenet::checkpoint::det_dir::is_detection_dir(&args.model_dir) {
        return detection(&args);
    }
    if scalenet::checkpoint::seg_dir::is_segmentation_dir(&args.model_dir) {
        return segmentation(&args);
    }
    let device = super::device(&args.device)?;
    let loaded = load_model(&args.model_dir, &device)?;
    let arch = loaded.network.arch();
    let (in_chans, img_size, num_classes) = (arch.in_chans(), arch.img_size(), arch.num_classes());
    // Class names: config.json's label_names, else Fashion-MNIST's for 10-class grey models.
    let names: Vec<String> = match loaded
        .config
        .raw
        .get("label_names")
        .and_then(|v| v.as_array())
    {
        Some(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or("?").to_string())
            .collect(),
        None if num_classes == 10 && in_chans == 1 => {
            FMNIST_CLASSES.iter().map(|s| s.to_string()).collect()
        }
        None => (0..num_classes).map(|i| format!("class {i}")).collect(),
    };
    let tf = Transform::new(in_chans, img_size, &loaded.config.pretrained_cfg, None);
    for path in &args.images {
        let (pixels, h, w) = folder::decode(path)?;
        let small = h <= img_size[0] && w <= img_size[1];
        let x = tf.apply(
            &RawImage {
                pixels,
                shape: [3, h, w],
                label: 0,
            },
            small,
            &mut rand::rngs::StdRng::seed_from_u64(0),
        );
        let x = Tensor::<4>::from_data(
            TensorData::new(x, [1, in_chans, img_size[0], img_size[1]]),
            &device,
        );
        let p = to_vec(softmax(loaded.network.forward(x), 1));
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        println!("{}", path.display());
        for &i in order.iter().take(args.top) {
            println!(
                "  {:>6.2}%  {}",
                100.0 * p[i],
                names.get(i).map_or("?", String::as_str)
            );
        }
    }
    Ok(())
}

/// Each image's predicted mask and an overlay with a legend, in `--out`.
fn segmentation(args: &Args) -> Result<()> {
    use scalenet::overlay::{write_grey_png, write_overlay};
    use scalenet::train::seg_infer::predict_mask;
    let Some(out) = &args.out else {
        anyhow::bail!(
            "--out DIR is required for a segmentation model (the masks and overlays go there)"
        );
    };
    let device = super::device(&args.device)?;
    let (config, seg) = scalenet::checkpoint::seg_dir::load_segmentor(&args.model_dir, &device)?;
    let classes = segmentation_classes(&config);
    std::fs::create_dir_all(out)?;
    for path in &args.images {
        let (pixels, h, w) = folder::decode(path)?;
        let mask = predict_mask(&seg, &config, &pixels, [h, w], args.mode, &device);
        let stem = path
            .file_stem()
            .map_or("image".into(), |s| s.to_string_lossy().to_string());
        write_grey_png(&out.join(format!("{stem}_mask.png")), &mask, h, w)?;
        let overlay = out.join(format!("{stem}_overlay.png"));
        write_overlay(&overlay, &pixels, [3, h, w], &mask, &classes)?;
        let mut counts = vec![0usize; classes.len()];
        mask.iter().for_each(|&k| counts[k as usize] += 1);
        let found: Vec<String> = (1..classes.len())
            .filter(|&k| counts[k] > 0)
            .map(|k| {
                format!(
                    "{} {:.1}%",
                    classes[k],
                    100.0 * counts[k] as f64 / mask.len() as f64
                )
            })
            .collect();
        println!(
            "{}: {} → {}",
            path.display(),
            found.join(", "),
            overlay.display()
        );
    }
    Ok(())
}

/// The segmentor's class names: fmnist-scenes' when it has their 11, else numbered.
fn segmentation_classes(config: &scalenet::checkpoint::seg_dir::SegModelConfig) -> Vec<String> {
    let scene = scalenet::data::scenes::scene_classes();
    if config.spec.num_classes == scene.len() {
        return scene;
    }
    (0..config.spec.num_classes)
        .map(|k| format!("class {k}"))
        .collect()
}

/// A detector's boxes on each image: drawn, printed and written as COCO results.
fn detection(args: &Args) -> Result<()> {
    use scalenet::data::det::DetSample;
    use scalenet::overlay::{write_boxes, DrawnBox};
    use scalenet::train::det_infer::{det_box, detect_samples};
    let Some(out) = &args.out else {
        anyhow::bail!("--out DIR is required for a detector (the drawn boxes and JSON go there)");
    };
    let device = super::device(&args.device)?;
    let (config, det) = scalenet::checkpoint::det_dir::load_detector(&args.model_dir, &device)?;
    let classes: Vec<String> = config.class_names.clone().unwrap_or_else(|| {
        (0..config.spec.num_classes)
            .map(|k| format!("class {k}"))
            .collect()
    });
    for path in &args.images {
        let (pixels, h, w) = folder::decode(path)?;
        // Made once an image decodes: a bad first image leaves nothing behind.
        std::fs::create_dir_all(out)?;
        let sample = DetSample::unlabelled(pixels, [3, h, w]);
        let found = detect_samples(&det, &config, std::slice::from_ref(&sample), &device).remove(0);
        let stem = path
            .file_stem()
            .map_or("image".into(), |s| s.to_string_lossy().to_string());
        let results: Vec<serde_json::Value> = found
            .iter()
            .map(|d| {
                let b = det_box(0, d);
                serde_json::json!({"file_name": path.file_name().map(|f| f.to_string_lossy().to_string()),
                    "category_id": d.label, "category": classes.get(d.label), "bbox": b.bbox, "score": d.score})
            })
            .collect();
        let json = out.join(format!("{stem}_detections.json"));
        let text = format!("{}\n", serde_json::to_string_pretty(&results)?);
        scalenet::checkpoint::atomic::atomic_write(&json, text.as_bytes())?;
        let shown: Vec<DrawnBox> = found
            .iter()
            .filter(|d| d.score >= args.min_score)
            .map(|d| DrawnBox {
                bbox: d.bbox,
                label: d.label,
                score: d.score,
            })
            .collect();
        let drawn = out.join(format!("{stem}_boxes.png"));
        write_boxes(&drawn, &sample.pixels, sample.shape, &shown, &classes)?;
        let names: Vec<String> = shown
            .iter()
            .map(|d| format!("{} {:.2}", classes[d.label], d.score))
            .collect();
        println!(
            "{}: {} box(es) ≥ {} ({}) → {}",
            path.display(),
            shown.len(),
            args.min_score,
            names.join(", "),
            drawn.display()
        );
    }
    Ok(())
}
