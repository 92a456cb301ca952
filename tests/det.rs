//! Detection against its references: COCO box AP against pycocotools' own `COCOeval`
//! (tests/fixtures/gen_coco_ap_fixtures.py writes the ground truth, the detections and what
//! pycocotools computes from them).

use std::path::Path;

use scalenet::data::coco::CocoBox;
use scalenet::train::coco_ap::{coco_eval, DetBox};
use serde_json::Value;

fn read(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/det")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn bbox(v: &Value) -> [f64; 4] {
    let b: Vec<f64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    [b[0], b[1], b[2], b[3]]
}

#[test]
fn box_ap_equals_pycocotools() {
    let gt = read("coco_gt.json");
    let ids = |key: &str| -> Vec<u64> {
        gt[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_u64().unwrap())
            .collect()
    };
    let gts: Vec<CocoBox> = gt["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| CocoBox {
            image: a["image_id"].as_u64().unwrap(),
            category: a["category_id"].as_u64().unwrap(),
            bbox: bbox(&a["bbox"]),
            area: a["area"].as_f64().unwrap(),
            crowd: a["iscrowd"].as_u64() == Some(1),
        })
        .collect();
    let dets: Vec<DetBox> = read("coco_dets.json")
        .as_array()
        .unwrap()
        .iter()
        .map(|d| DetBox {
            image: d["image_id"].as_u64().unwrap(),
            category: d["category_id"].as_u64().unwrap(),
            bbox: bbox(&d["bbox"]),
            score: d["score"].as_f64().unwrap(),
        })
        .collect();
    let got = coco_eval(&gts, &dets, &ids("images"), &ids("categories"));
    let want = read("coco_eval.json");
    let close = |a: f64, b: &Value| (a - b.as_f64().unwrap()).abs() < 1e-12;
    for (i, w) in want["stats"].as_array().unwrap().iter().enumerate() {
        assert!(close(got.stats[i], w), "stat {i}: {} vs {w}", got.stats[i]);
    }
    for (k, w) in want["per_class"].as_array().unwrap().iter().enumerate() {
        assert!(
            close(got.per_class[k], w),
            "class {k}: {} vs {w}",
            got.per_class[k]
        );
    }
}

/// Every box found exactly, nothing else: AP and AR are 1 (a category without ground truth
/// stays out of the means, as pycocotools leaves it at -1).
#[test]
fn perfect_detections_score_one() {
    let gts: Vec<CocoBox> = (0..6)
        .map(|i| CocoBox {
            image: i / 2,
            category: 1 + i % 2,
            bbox: [10.0 * i as f64, 5.0, 20.0 + 10.0 * i as f64, 30.0],
            area: (20.0 + 10.0 * i as f64) * 30.0,
            crowd: false,
        })
        .collect();
    let dets: Vec<DetBox> = gts
        .iter()
        .map(|g| DetBox {
            image: g.image,
            category: g.category,
            bbox: g.bbox,
            score: 0.9,
        })
        .collect();
    let s = coco_eval(&gts, &dets, &[0, 1, 2], &[1, 2, 3]);
    assert_eq!(s.stats[0], 1.0);
    assert_eq!(s.stats[8], 1.0);
    assert_eq!(s.per_class, vec![1.0, 1.0, -1.0]);
}

/// NMS against torchvision's `batched_nms` (tests/fixtures/gen_nms_fixtures.py): the same
/// indices in the same order, through its coordinate-offset path (300 boxes) and its per-class
/// path (1,200).
#[test]
fn batched_nms_equals_torchvision() {
    use scalenet::detect::boxes::batched_nms;
    for case in read("nms.json").as_array().unwrap() {
        let f32s = |v: &Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        let boxes: Vec<[f32; 4]> = case["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let b = f32s(b);
                [b[0], b[1], b[2], b[3]]
            })
            .collect();
        let scores = f32s(&case["scores"]);
        let classes: Vec<usize> = case["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap() as usize)
            .collect();
        let want: Vec<usize> = case["keep"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_u64().unwrap() as usize)
            .collect();
        let got = batched_nms(
            &boxes,
            &scores,
            &classes,
            case["threshold"].as_f64().unwrap(),
        );
        assert!(want.len() < boxes.len(), "the case suppresses something");
        assert_eq!(got, want, "{} boxes", boxes.len());
    }
}

/// COCO instances files: a good one reads back every box (area defaulting to w·h); each
/// mistake a detector would trip over later is one error naming the file and the annotation.
#[test]
fn coco_instances_load_and_bad_ones_are_one_clear_error() {
    use scalenet::data::coco::read_coco;
    let dir = std::env::temp_dir().join(format!("scalenet-coco-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.png"), b"not read here").unwrap();
    let file = dir.join("instances.json");
    let write = |annotations: &str, file_name: &str| {
        let json = format!(
            r#"{{"images": [{{"id": 7, "file_name": "{file_name}", "width": 40, "height": 30}}],
               "categories": [{{"id": 3, "name": "bag"}}], "annotations": [{annotations}]}}"#
        );
        std::fs::write(&file, json).unwrap();
    };
    write(
        r#"{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 5], "iscrowd": 0},
           {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 40, 30], "area": 99.5, "iscrowd": 1}"#,
        "a.png",
    );
    let set = read_coco(&file, &dir).unwrap();
    assert_eq!(set.images[0].path, dir.join("a.png"));
    assert_eq!(set.categories, vec![(3, "bag".to_string())]);
    assert_eq!((set.boxes[0].area, set.boxes[0].crowd), (50.0, false));
    assert_eq!((set.boxes[1].area, set.boxes[1].crowd), (99.5, true));
    let cases = [
        (
            r#"{"id": 4, "image_id": 7, "category_id": 3, "bbox": [35, 2, 10, 5]}"#,
            "a.png",
            "annotation id 4: bbox [35.0, 2.0, 10.0, 5.0] lies outside its 40×30 image 7",
        ),
        (
            r#"{"id": 5, "image_id": 7, "category_id": 3, "bbox": [1, 2, 0, 5]}"#,
            "a.png",
            "annotation id 5: bbox [1.0, 2.0, 0.0, 5.0] has no size",
        ),
        (
            r#"{"id": 6, "image_id": 7, "category_id": 9, "bbox": [1, 2, 3, 5]}"#,
            "a.png",
            "annotation id 6: category_id 9 is not in categories",
        ),
        (
            r#"{"image_id": 8, "category_id": 3, "bbox": [1, 2, 3, 5]}"#,
            "a.png",
            "annotation 0: image_id 8 is not in images",
        ),
        (
            r#"{"image_id": 7, "category_id": 3, "bbox": [1, 2, 3]}"#,
            "a.png",
            "not COCO instances JSON",
        ),
        ("", "b.png", "b.png: not found (image 7 of"),
    ];
    for (ann, image, want) in cases {
        write(ann, image);
        let err = read_coco(&file, &dir).unwrap_err().to_string();
        assert!(err.contains(want) && !err.contains('\n'), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Relative error at most 1e-4 (absolute below 1).
fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0f32, f32::max);
    eprintln!("{what}: max error {err:e}");
    assert!(err <= 1e-4, "{what}: {err}");
}

fn boxes_of(v: &[f32]) -> Vec<[f32; 4]> {
    v.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

const DETECTORS: [&str; 4] = [
    "vit_retinanet",
    "grown_vit_retinanet",
    "swin_retinanet",
    "grown_swin_retinanet",
];

/// torchvision's RetinaNet on four fixture backbones (tests/fixtures/gen_det_fixtures.py): the
/// pyramid, the head's outputs and the anchors; the matcher's indices, the loss and a few
/// gradients on fixed targets; the post-processed detections (same labels, boxes and scores
/// ≤ 1e-4).
#[test]
fn retinanet_matches_torchvision() {
    use burn::module::Param;
    use burn::tensor::{Device, Tensor, TensorData};
    use scalenet::checkpoint::det_dir::load_detector;
    use scalenet::checkpoint::TensorFile;
    use scalenet::detect::loss::ImageTargets;
    use scalenet::detect::matching::match_anchors;
    use scalenet::model::weights::to_vec;

    for name in DETECTORS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/det/models")
            .join(name);
        let device = Device::flex().autodiff();
        let (cfg, det) = load_detector(&dir, &device).unwrap();
        let mut want = TensorFile::read(&dir.join("io.safetensors")).unwrap();
        let mut take = |k: &str| want.take(k).unwrap();
        let input = take("input");
        let n = input.shape[0];
        let x = Tensor::<4>::from_data(TensorData::new(input.values, input.shape), &device);
        for (l, level) in det.levels(x.clone(), &mut None).into_iter().enumerate() {
            close(
                &to_vec(level),
                &take(&format!("level.{l}")).values,
                &format!("{name} level {l}"),
            );
        }
        let out = det.forward(x.clone());
        close(
            &to_vec(out.cls.clone()),
            &take("cls_logits").values,
            &format!("{name} cls_logits"),
        );
        close(
            &to_vec(out.reg.clone()),
            &take("bbox_regression").values,
            &format!("{name} bbox_regression"),
        );
        assert_eq!(
            out.anchors,
            boxes_of(&take("anchors").values),
            "{name} anchors"
        );
        let targets: Vec<ImageTargets> = (0..n)
            .map(|i| ImageTargets {
                boxes: boxes_of(&take(&format!("target.{i}.boxes")).values),
                labels: take(&format!("target.{i}.labels"))
                    .values
                    .iter()
                    .map(|&v| v as usize)
                    .collect(),
            })
            .collect();
        for (i, t) in targets.iter().enumerate() {
            let s = &cfg.spec;
            let got = match_anchors(
                &t.boxes,
                &out.anchors,
                s.fg_iou_thresh as f32,
                s.bg_iou_thresh as f32,
            );
            let want: Vec<i64> = take(&format!("matched.{i}"))
                .values
                .iter()
                .map(|&v| v as i64)
                .collect();
            assert_eq!(got, want, "{name} matched {i}");
        }
        let (cls_loss, box_loss) = det.loss(out, &targets);
        close(
            &to_vec(cls_loss.clone()),
            &take("loss_cls").values,
            &format!("{name} loss_cls"),
        );
        close(
            &to_vec(box_loss.clone()),
            &take("loss_box").values,
            &format!("{name} loss_box"),
        );
        let grads = (cls_loss + box_loss).backward();
        let grad = |p: &Param<Tensor<4>>| to_vec(p.grad(&grads).unwrap());
        let pairs = [
            (
                &det.head.cls.out.weight,
                "head.classification_head.cls_logits.weight",
            ),
            (
                &det.head.reg.out.weight,
                "head.regression_head.bbox_reg.weight",
            ),
            (
                &det.head.cls.convs[0].weight,
                "head.classification_head.conv.0.0.weight",
            ),
            (&det.fpn.inner[0].weight, "neck.fpn.inner_blocks.0.0.weight"),
        ];
        for (p, key) in pairs {
            close(
                &grad(p),
                &take(&format!("grad.{key}")).values,
                &format!("{name} grad {key}"),
            );
        }
        for (i, dets) in det.detect(x).iter().enumerate() {
            let labels: Vec<f32> = dets.iter().map(|d| d.label as f32).collect();
            assert_eq!(
                labels,
                take(&format!("det.{i}.labels")).values,
                "{name} det {i} labels"
            );
            let boxes: Vec<f32> = dets.iter().flat_map(|d| d.bbox).collect();
            close(
                &boxes,
                &take(&format!("det.{i}.boxes")).values,
                &format!("{name} det {i} boxes"),
            );
            let scores: Vec<f32> = dets.iter().map(|d| d.score).collect();
            close(
                &scores,
                &take(&format!("det.{i}.scores")).values,
                &format!("{name} det {i} scores"),
            );
        }
    }
}

fn scalenet() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_scalenet"));
    cmd.env("SCALENET_BLAS", "none").env("HF_HUB_OFFLINE", "1");
    cmd
}

fn ok(o: std::process::Output) -> std::process::Output {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// As a new user: `init --arch retinanet` around a small grey ViT, `train` on fmnist-scenes
/// (validation AP each epoch), a run stopped mid-epoch resumes to the same weights, `eval`
/// reports COCO AP and per-class AP, `info` describes it, `predict` draws boxes and writes
/// COCO results.
#[test]
fn init_train_resume_eval_predict_a_detector() {
    use std::ffi::OsString;
    let tmp = std::env::temp_dir().join(format!("scalenet-det-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let run = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let a: Vec<OsString> = args.iter().map(|p| p.as_ref().to_os_string()).collect();
        scalenet().args(a).output().unwrap()
    };
    let backbone = tmp.join("vit");
    ok(run(&[
        &"init",
        &"--arch",
        &"vit_tiny_patch16_224",
        &"--out",
        &backbone,
        &"--model-arg",
        &"img_size=48",
        &"--model-arg",
        &"in_chans=1",
        &"--model-arg",
        &"patch_size=8",
        &"--model-arg",
        &"embed_dim=16",
        &"--model-arg",
        &"depth=2",
        &"--model-arg",
        &"num_heads=2",
    ]));
    let det = tmp.join("det");
    let o = ok(run(&[
        &"init",
        &"--arch",
        &"retinanet",
        &"--fpn-channels",
        &"8",
        &"--backbone",
        &backbone,
        &"--out",
        &det,
    ]));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("anchors 16/32/64/128/256") && said.contains("10 classes"),
        "{said}"
    );
    let train = |out: &Path, extra: &[&str]| {
        let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"train", &det, &"--out", &out];
        let common = [
            "--data",
            "fmnist-scenes-mini",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--train-subset",
            "16",
            "--test-subset",
            "8",
            "--precision",
            "f32",
        ];
        a.extend(
            common
                .iter()
                .chain(extra)
                .map(|s| s as &dyn AsRef<std::ffi::OsStr>),
        );
        run(&a)
    };
    let straight = tmp.join("straight");
    let o = ok(train(&straight, &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("val AP"), "{err}");
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("val_map") && metrics.contains("val_ap50"),
        "{metrics}"
    );
    let stopped = tmp.join("stopped");
    let o = train(&stopped, &["--stop-after-steps", "3"]);
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    ok(run(&[&"train", &"--resume", &stopped]));
    let weights = |r: &Path| std::fs::read(r.join("model/model.safetensors")).unwrap();
    assert!(
        weights(&straight) == weights(&stopped),
        "resumed weights differ"
    );

    let model = straight.join("model");
    let json = tmp.join("eval.json");
    let o = ok(run(&[
        &"eval",
        &model,
        &"--data",
        &"fmnist-scenes-mini",
        &"--test-subset",
        &"8",
        &"--json",
        &json,
    ]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("AP50") && out.contains("Ankle boot"), "{out}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let ap = v["stats"]["AP"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ap), "{v}");
    assert_eq!(v["AP_per_class"].as_array().unwrap().len(), 10);
    let o = ok(run(&[&"info", &model]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("RetinaNet") && out.contains("T-shirt/top"),
        "{out}"
    );
    let o = ok(run(&[
        &"bench",
        &model,
        &"--batch-size",
        &"2",
        &"--steps",
        &"1",
        &"--warmup",
        &"0",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["train_img_per_s", "infer_img_per_s"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{v}");
    }

    let scene = tmp.join("scenes");
    ok(run(&[
        &"scenes",
        &"--data",
        &"fmnist-scenes-mini",
        &"--count",
        &"1",
        &"--out",
        &scene,
    ]));
    let pred = tmp.join("pred");
    let o = ok(run(&[
        &"predict",
        &model,
        &scene.join("scene_0.png"),
        &"--out",
        &pred,
        &"--min-score",
        &"0",
    ]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("scene_0_boxes.png"), "{out}");
    let drawn = image::open(pred.join("scene_0_boxes.png")).unwrap();
    assert!(drawn.width() >= 96, "{}", drawn.width());
    let dets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pred.join("scene_0_detections.json")).unwrap())
            .unwrap();
    for d in dets.as_array().unwrap() {
        assert_eq!(d["bbox"].as_array().unwrap().len(), 4, "{d}");
        assert!(d["score"].as_f64().unwrap() > 0.05, "{d}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fn deepforest() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/det/deepforest_voc")
}

/// deepforest's real photographs (tests/fixtures/gen_voc_fixtures.py): every box and name as
/// Python's xml.etree reads them, the image found under the XML's own name, crowns in pixels.
#[test]
fn voc_folders_load_as_their_xml_says() {
    use scalenet::data::det::DetDataset;
    let dir = deepforest();
    let data = DetDataset::open(&format!("voc:{}", dir.display())).unwrap();
    // SOAP_061's crowns are labelled Alive or Dead, OSBS_029's Tree.
    assert_eq!(data.classes, ["Alive", "Dead", "Tree"]);
    let want = read("deepforest_voc/expected.json");
    for (split, id) in [(&data.train, "OSBS_029"), (&data.val, "SOAP_061")] {
        assert_eq!(split.len(), 1);
        let s = split.get(0).unwrap();
        assert_eq!(s.shape, [3, 400, 400]);
        let objects = want[id].as_array().unwrap();
        let boxes: Vec<[f64; 4]> = objects.iter().map(|o| bbox(&o["bbox"])).collect();
        let got: Vec<[f64; 4]> = s.boxes.iter().map(|b| b.map(f64::from)).collect();
        assert_eq!(got, boxes, "{id}");
        let names: Vec<&str> = objects
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        let got: Vec<&str> = s.labels.iter().map(|&k| data.classes[k].as_str()).collect();
        assert_eq!(got, names, "{id}");
        assert!(s.ignore.iter().all(|&i| !i));
    }
    assert_eq!(
        data.test.get(0).unwrap().boxes.len(),
        37,
        "test falls back to val"
    );
}

/// A broken VOC folder is one line naming the file and what is wrong.
#[test]
fn bad_voc_folders_are_one_clear_error() {
    use scalenet::data::det::DetDataset;
    let tmp = std::env::temp_dir().join(format!("scalenet-voc-{}", std::process::id()));
    let fresh = || {
        let _ = std::fs::remove_dir_all(&tmp);
        for sub in ["Annotations", "JPEGImages", "ImageSets/Main"] {
            for f in std::fs::read_dir(deepforest().join(sub)).unwrap() {
                let f = f.unwrap().path();
                std::fs::create_dir_all(tmp.join(sub)).unwrap();
                std::fs::copy(&f, tmp.join(sub).join(f.file_name().unwrap())).unwrap();
            }
        }
    };
    let xml = tmp.join("Annotations/OSBS_029.xml");
    let edit = |from: &str, to: &str| {
        let t = std::fs::read_to_string(&xml).unwrap();
        assert!(t.contains(from));
        std::fs::write(&xml, t.replacen(from, to, 1)).unwrap();
    };
    let err = || {
        let spec = format!("voc:{}", tmp.display());
        let e = DetDataset::open(&spec)
            .and_then(|d| d.train.get(0).map(|_| ()))
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        e
    };
    fresh();
    edit("</annotation>", "");
    assert!(err().contains("not well-formed XML"), "{}", err());
    fresh();
    edit("<xmax>227</xmax>", "<xmax>401</xmax>");
    assert!(
        err().contains("object 0 (Tree) has box") && err().contains("outside"),
        "{}",
        err()
    );
    fresh();
    edit("<xmax>227</xmax>", "<xmax>203</xmax>");
    assert!(err().contains("of no size"), "{}", err());
    fresh();
    edit("<ymin>67</ymin>", "<ymin>sixty</ymin>");
    assert!(err().contains("'sixty', not a number"), "{}", err());
    fresh();
    std::fs::remove_file(tmp.join("JPEGImages/OSBS_029.jpg")).unwrap();
    assert!(
        err().contains("not found") && err().contains("OSBS_029.xml"),
        "{}",
        err()
    );
    fresh();
    edit("<width>400</width>", "<width>500</width>");
    assert!(
        err().contains("is 400×400, but its annotation says 500×400"),
        "{}",
        err()
    );
    fresh();
    std::fs::remove_file(tmp.join("ImageSets/Main/val.txt")).unwrap();
    assert!(err().contains("val.txt: not found"), "{}", err());
    let _ = std::fs::remove_dir_all(&tmp);
}

/// On real photographs as a new user: a detector around an RGB ViT trained a step on the
/// deepforest VOC folder, evaluated, and `predict` drawing its boxes on one of them.
#[test]
fn a_detector_trains_and_predicts_on_the_deepforest_photographs() {
    let tmp = std::env::temp_dir().join(format!("scalenet-df-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let run = |args: &[&dyn AsRef<std::ffi::OsStr>]| scalenet().args(args).output().unwrap();
    let backbone = tmp.join("vit");
    ok(run(&[
        &"init",
        &"--arch",
        &"vit_tiny_patch16_224",
        &"--out",
        &backbone,
        &"--model-arg",
        &"img_size=64",
        &"--model-arg",
        &"embed_dim=16",
        &"--model-arg",
        &"depth=2",
        &"--model-arg",
        &"num_heads=2",
    ]));
    let det = tmp.join("det");
    ok(run(&[
        &"init",
        &"--arch",
        &"retinanet",
        &"--num-classes",
        &"3",
        &"--fpn-channels",
        &"8",
        &"--backbone",
        &backbone,
        &"--out",
        &det,
    ]));
    let data = format!("voc:{}", deepforest().display());
    let out = tmp.join("run");
    ok(run(&[
        &"train",
        &det,
        &"--data",
        &data,
        &"--epochs",
        &"1",
        &"--batch-size",
        &"1",
        &"--precision",
        &"f32",
        &"--out",
        &out,
    ]));
    bad_photos_fail_or_are_skipped(&tmp, &det);
    let model = out.join("model");
    let o = ok(run(&[&"eval", &model, &"--data", &data]));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("1 images") && said.contains("Dead"), "{said}");
    let photo = deepforest().join("JPEGImages/SOAP_061.jpg");
    let pred = tmp.join("pred");
    ok(run(&[&"predict", &model, &photo, &"--out", &pred]));
    let drawn = image::open(pred.join("SOAP_061_boxes.png")).unwrap();
    assert_eq!((drawn.width(), drawn.height()), (400, 400));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A corrupt photograph in the training split stops `train` in one line that says how to skip
/// it; with `--on-bad-image skip` the run goes on without it, over the batch it leaves empty,
/// and says so.
fn bad_photos_fail_or_are_skipped(tmp: &Path, det: &Path) {
    let voc = tmp.join("voc");
    for sub in ["Annotations", "JPEGImages", "ImageSets/Main"] {
        std::fs::create_dir_all(voc.join(sub)).unwrap();
        for f in std::fs::read_dir(deepforest().join(sub)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, voc.join(sub).join(f.file_name().unwrap())).unwrap();
        }
    }
    let xml = std::fs::read_to_string(voc.join("Annotations/OSBS_029.xml")).unwrap();
    std::fs::write(voc.join("Annotations/BAD.xml"), xml).unwrap();
    std::fs::write(
        voc.join("JPEGImages/BAD.jpg"),
        b"\xff\xd8\xff\xe0 not a photo",
    )
    .unwrap();
    let list = voc.join("ImageSets/Main/train.txt");
    let names = std::fs::read_to_string(&list).unwrap();
    std::fs::write(&list, format!("{}\nBAD\n", names.trim_end())).unwrap();
    let data = format!("voc:{}", voc.display());
    let train = |name: &str, batch: &str, extra: &[&str]| {
        scalenet()
            .arg("train")
            .arg(det)
            .args(["--data", &data, "--epochs", "1", "--batch-size", batch])
            .args(["--precision", "f32"])
            .args(extra)
            .arg("--out")
            .arg(tmp.join(name))
            .output()
            .unwrap()
    };
    let o = train("bad", "2", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for want in ["BAD.jpg", "corrupt", "--on-bad-image skip"] {
        assert!(err.contains(want), "{err}");
    }
    // One image a batch: the bad photograph's batch is left empty, and the run steps over it.
    let o = ok(train("skip", "1", &["--on-bad-image", "skip"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("skipped 1 unreadable image"), "{err}");
}

/// `reproduce --family det` on a tiny configuration: RetinaNet on the committed study's base
/// and grown backbones, each run evaluated once (`final.json`, COCO AP); the report holds their
/// rows; a second call reuses the finished runs; `--report` rewrites it, and refuses a study of
/// another family in one line.
#[test]
fn the_detection_study_runs_and_resumes() {
    let tmp = std::env::temp_dir().join(format!("scalenet-det-study-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let converged = Path::new(env!("CARGO_MANIFEST_DIR")).join("studies/converged");
    let reproduce = || {
        scalenet()
            .args(["reproduce", "--family", "det", "--out"])
            .arg(&tmp)
            .arg("--backbones")
            .arg(&converged)
            .args([
                "--data",
                "fmnist-scenes-mini",
                "--img-size",
                "16",
                "--channels",
                "8",
            ])
            .args(["--train-subset", "8", "--test-subset", "4", "--epochs", "1"])
            .args(["--seeds", "1", "--batch-size", "4", "--only", "base,grown"])
            .args(["--precision", "f32"])
            .output()
            .unwrap()
    };
    let o = reproduce();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = std::fs::read_to_string(tmp.join("RESULTS.md")).unwrap();
    for row in [
        "# Detection study",
        "| base | 4 | 1 |",
        "| grown | 8 | 1 |",
        "| Trouser |",
        "Test AP: grown",
    ] {
        assert!(report.contains(row), "{row} not in {report}");
    }
    assert!(tmp.join("results.png").is_file());
    let fin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.join("runs/grown-s0/final.json")).unwrap())
            .unwrap();
    let ap = fin["test_ap"].as_f64().unwrap();
    assert!(
        (0.0..=100.0).contains(&ap) && fin["train_images"] == 8,
        "{fin}"
    );
    let again = reproduce();
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && said.contains("grown-s0: done earlier, reusing"),
        "{said}"
    );
    let report = |family: &str| {
        scalenet()
            .args(["reproduce", "--family", family, "--report", "--out"])
            .arg(&tmp)
            .output()
            .unwrap()
    };
    std::fs::remove_file(tmp.join("RESULTS.md")).unwrap();
    assert!(report("det").status.success());
    assert!(
        tmp.join("RESULTS.md").is_file(),
        "--report rewrites the report"
    );
    let o = report("seg");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.lines().count() == 1, "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A COCO folder (`coco:DIR`) made of the scenes `scenes --out` writes reads back as the same
/// scenes: pixels, boxes, classes and areas.
#[test]
fn coco_folders_read_back_the_scenes_they_were_written_from() {
    use scalenet::data::det::DetDataset;
    let tmp = std::env::temp_dir().join(format!("scalenet-coco-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("annotations")).unwrap();
    for (split, dir) in [("train", "train"), ("test", "val")] {
        let out = tmp.join(dir);
        let run = |args: &[&dyn AsRef<std::ffi::OsStr>]| scalenet().args(args).output().unwrap();
        ok(run(&[
            &"scenes", &"--split", &split, &"-n", &"3", &"--out", &out,
        ]));
        let json = tmp.join(format!("annotations/instances_{dir}.json"));
        std::fs::rename(out.join("annotations.json"), json).unwrap();
    }
    let coco = DetDataset::open(&format!("coco:{}", tmp.display())).unwrap();
    let scenes = DetDataset::open("fmnist-scenes-mini").unwrap();
    assert_eq!(coco.classes, scenes.classes);
    assert_eq!(
        (coco.train.len(), coco.val.len(), coco.test.len()),
        (3, 3, 3)
    );
    for i in 0..3 {
        let (a, b) = (coco.val.get(i).unwrap(), scenes.test.get(i).unwrap());
        assert_eq!(a.shape, [3, 96, 96]);
        assert_eq!(&a.pixels[..96 * 96], &b.pixels[..], "scene {i}");
        assert_eq!(
            (&a.boxes, &a.labels, &a.areas),
            (&b.boxes, &b.labels, &b.areas)
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
