use std::path::PathBuf;

use anyhow::{bail, Result};
use scalenet::data::seg::{SegDataset, SEG_DATA_HELP};
use scalenet::overlay::{write_grey_png, write_overlay};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "fmnist-scenes-mini", help = SEG_DATA_HELP)]
    data: String,
    /// train, val or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// How many scenes, from the first.
    #[arg(short = 'n', long, default_value_t = 8)]
    count: usize,
    /// Writes scene_<i>.png (the image), scene_<i>_mask.png (class indices) and
    /// scene_<i>_truth.png (the labels drawn over the image) here; for fmnist-scenes also
    /// annotations.json, each visible garment's box and class in COCO's instances format.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let data = SegDataset::open(&args.data)?;
    let split = match args.split.as_str() {
        "train" => &data.train,
        "val" => &data.val,
        "test" => &data.test,
        s => bail!("--split {s}: expected train, val or test"),
    };
    std::fs::create_dir_all(&args.out)?;
    let n = args.count.min(split.len());
    for i in 0..n {
        let s = split.get(i)?;
        let [c, h, w] = s.shape;
        if c != 1 {
            bail!("{c}-channel scenes are not drawn");
        }
        write_grey_png(&args.out.join(format!("scene_{i}.png")), &s.pixels, h, w)?;
        write_grey_png(&args.out.join(format!("scene_{i}_mask.png")), &s.mask, h, w)?;
        write_overlay(
            &args.out.join(format!("scene_{i}_truth.png")),
            &s.pixels,
            s.shape,
            &s.mask,
            &data.classes,
        )?;
    }
    if let scalenet::data::seg::SegSplit::Scenes(scenes) = split {
        let coco = coco_instances(scenes, n, &data.classes);
        let text = format!("{}\n", serde_json::to_string_pretty(&coco)?);
        scalenet::checkpoint::atomic::atomic_write(
            &args.out.join("annotations.json"),
            text.as_bytes(),
        )?;
    }
    println!(
        "wrote {n} {} scenes of --data {} to {}",
        args.split,
        args.data,
        args.out.display()
    );
    Ok(())
}

/// The first `n` scenes' garments in COCO's instances format: images `scene_<i>.png` with id
/// i + 1, one category per garment class (the mask's index, background left out), each visible
/// garment's tight box and its visible pixels as `area`.
fn coco_instances(
    scenes: &scalenet::data::scenes::SceneSplit,
    n: usize,
    classes: &[String],
) -> serde_json::Value {
    use serde_json::json;
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    for i in 0..n {
        let scene = scenes.scene(i);
        images.push(json!({"id": i + 1, "file_name": format!("scene_{i}.png"),
            "width": scene.size, "height": scene.size}));
        for o in &scene.objects {
            annotations.push(json!({"id": annotations.len() + 1, "image_id": i + 1,
                "category_id": o.class, "bbox": o.bbox, "area": o.area, "iscrowd": 0}));
        }
    }
    let categories: Vec<_> = classes
        .iter()
        .enumerate()
        .skip(1)
        .map(|(k, name)| json!({"id": k, "name": name}))
        .collect();
    json!({"images": images, "annotations": annotations, "categories": categories})
}
