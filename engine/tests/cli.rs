//! The `graft` command line: `classify` on real photos with the converted weights.

use std::process::Command;

fn graft(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(args)
        .output()
        .expect("graft runs")
}

fn fixture(name: &str) -> String {
    format!("{}/../tests/fixtures/imagenet/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn classify_json_finds_the_cat_and_the_espresso() {
    for model in ["efficientnet-lite0", "mobilenet-v2"] {
        let output = graft(&[
            "classify",
            "--model",
            model,
            "--json",
            &fixture("chelsea-224.png"),
            &fixture("coffee-224.png"),
        ]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert_eq!(line["model"], model);
            assert_eq!(line["logits"].as_array().map(Vec::len), Some(1000));
            let top5 = line["top5"].as_array().expect("top5");
            assert_eq!(top5.len(), 5);
            let probs: Vec<f64> = top5.iter().map(|p| p["prob"].as_f64().unwrap()).collect();
            assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{probs:?}");
        }
        let cat = &lines[0]["top5"][0];
        assert!((281..=285).contains(&cat["class"].as_u64().unwrap()), "{model}: {cat}");
        assert!(
            cat["label"].as_str().unwrap().contains("cat") || cat["label"] == "tabby",
            "{model}: {cat}"
        );
        assert_eq!(lines[1]["top5"][0]["label"], "espresso", "{model}");
        assert!(lines[1]["top5"][0]["prob"].as_f64().unwrap() > 0.8, "{model}");
        assert!(lines[0]["image"].as_str().unwrap().ends_with("chelsea-224.png"));
    }
}

#[test]
fn classify_text_prints_top5_and_reports_unreadable_files_without_stopping() {
    let not_an_image = fixture("make_golden.py");
    let output = graft(&[
        "classify",
        "--model",
        "mobilenet-v2",
        &not_an_image,
        &fixture("coffee-224.png"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a bad file must make the exit status non-zero"
    );
    assert!(
        stderr.contains("make_golden.py") && stderr.contains("not an image"),
        "{stderr}"
    );
    assert!(
        stdout.contains("espresso (967)"),
        "the good image is still classified: {stdout}"
    );
    assert_eq!(stdout.lines().filter(|line| line.contains('%')).count(), 5, "{stdout}");
}

#[test]
fn unknown_models_are_refused_with_the_known_ones() {
    let output = graft(&["classify", "--model", "resnet50", &fixture("coffee-224.png")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("efficientnet-lite0") && stderr.contains("mobilenet-v2"),
        "{stderr}"
    );
}

/// A dataset built by `cargo xtask datasets` (`$GRAFT_DATASETS`, or `~/.cache/graft/datasets`).
fn dataset(name: &str) -> std::path::PathBuf {
    let root = std::env::var_os("GRAFT_DATASETS").map_or_else(
        || std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/graft/datasets"),
        std::path::PathBuf::from,
    );
    let path = root.join(name);
    assert!(
        path.is_dir(),
        "{} is missing: run `cargo xtask datasets`",
        path.display()
    );
    path
}

#[test]
fn train_json_ends_with_the_done_event_and_predict_uses_the_model_file() {
    let data = dataset("tuxpaint-photos");
    let out = std::env::temp_dir().join(format!("graft-cli-{}.graft", std::process::id()));
    let output = graft(&[
        "train",
        data.to_str().unwrap(),
        "--model",
        "mobilenet-v2",
        "--strategy",
        "head-only",
        "--epochs",
        "8",
        "--max-per-class",
        "12",
        "--seed",
        "1",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    assert_eq!(events[0]["event"], "started");
    assert!(events.iter().any(|e| e["event"] == "epoch"));
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["strategy"], "head-only");
    let classes: Vec<&str> = done["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        classes,
        ["birds", "flowers", "fruit", "insects", "mammals", "vegetables"]
    );
    let accuracy = done["val_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert!(done["epochs"].as_u64().unwrap() >= 1);
    assert!(done["seconds"].as_f64().unwrap() > 0.0);
    let per_class = done["per_class_accuracy"].as_object().unwrap();
    assert_eq!(per_class.len(), 6);
    let confusion = done["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 6);
    let val_total: u64 = confusion
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    // 12 per class, 20% held out: round(2.4) = 2 per class.
    assert_eq!(val_total, 12);
    let correct: u64 = (0..6).map(|i| confusion[i][i].as_u64().unwrap()).sum();
    assert!(
        (accuracy - correct as f64 / 12.0).abs() < 1e-9,
        "accuracy agrees with the confusion matrix"
    );

    // A photo of the training set comes back as one of the classes, with probabilities summing to <= 1.
    let bird = std::fs::read_dir(data.join("birds"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let output = graft(&[
        "predict",
        "--model-file",
        out.to_str().unwrap(),
        "--json",
        bird.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let top = line["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    assert!(classes.contains(&line["label"].as_str().unwrap()));
    assert_eq!(line["label"], top[0]["label"]);
    let sum: f64 = top.iter().map(|p| p["prob"].as_f64().unwrap()).sum();
    assert!(sum <= 1.0 + 1e-6);

    // A damaged model file is refused with its name.
    let mut bytes = std::fs::read(&out).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&out, bytes).unwrap();
    let output = graft(&["predict", "--model-file", out.to_str().unwrap(), bird.to_str().unwrap()]);
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("truncated or damaged") && error.contains(".graft"),
        "{error}"
    );
    let _ = std::fs::remove_file(&out);
}

#[test]
fn recommend_json_places_the_photos_in_a_quadrant() {
    let data = dataset("tuxpaint-photos");
    let output = graft(&["recommend", data.to_str().unwrap(), "--model", "mobilenet-v2", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let r: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(r["images"], 209);
    assert_eq!(r["classes"], 6);
    assert_eq!(r["min_per_class"], 18);
    assert_eq!(r["size"], "small");
    assert_eq!(r["quadrant"], "small-similar");
    assert_eq!(r["strategy"]["kind"], "head-only");
    let similarity = r["similarity"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&similarity));
    assert_eq!(r["signals"]["block_shift"].as_array().unwrap().len(), 19);
    assert!(
        r["explanation"]
            .as_str()
            .unwrap()
            .contains(&format!("Similarity {similarity:.2}"))
    );
}
