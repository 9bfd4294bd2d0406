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
