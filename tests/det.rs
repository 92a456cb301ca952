//! Detection against its references: COCO box AP against pycocotools' own `COCOeval`
//! (tests/fixtures/gen_coco_ap_fixtures.py writes the ground truth, the detections and what
//! pycocotools computes from them).

use std::path::Path;

use scalenet::train::coco_ap::{coco_eval, DetBox, GtBox};
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
    let gts: Vec<GtBox> = gt["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| GtBox {
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
    let gts: Vec<GtBox> = (0..6)
        .map(|i| GtBox {
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
