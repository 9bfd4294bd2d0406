//! Exports leave Graft and give the same answers elsewhere: the ONNX file of a model fine-tuned here,
//! run by tract (a pure-Rust ONNX runtime, independent of Burn), against the engine; the safetensors
//! file under PyTorch's names, checked against the names the importer maps and loaded back.
#![cfg(not(target_arch = "wasm32"))]

use std::ops::ControlFlow;
use std::sync::OnceLock;

use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use graft_engine::bundle::{self, BundleHeader};
use graft_engine::export::{self, ExportError, ExportFormat, pytorch};
use graft_engine::model::{ImageClassifier, ModelKind};
use graft_engine::strategy::StrategyKind;
use graft_engine::train::{TrainConfig, TrainEvent, Training};
use graft_engine::{metrics, preprocess, readback};
use graft_tests::{e2e, onnx, pretrained, training, web_page};
use tract_onnx::prelude::Framework;

const PHOTOS: [&str; 4] = [
    "astronaut-224.png",
    "chelsea-224.png",
    "coffee-224.png",
    "rocket-224.png",
];

/// `kind` fine-tuned here (its last two body blocks and a new head, one epoch on the fixture photos
/// at full size), as a `.graft` file: what the app and `graft train --out` export from.
fn fine_tuned(kind: ModelKind) -> Vec<u8> {
    let device = Device::flex();
    let pretrained = pretrained::load(kind, &device).expect("run `cargo xtask weights`");
    let dataset = training::photo_dataset();
    let mut config = TrainConfig::new(StrategyKind::PartialFreeze.with_defaults(2));
    config.epochs = 1;
    config.batch_size = 4;
    config.val_fraction = 0.34;
    config.patience = None;
    config.seed = 3;
    let trained = pollster::block_on(
        Training::new(&pretrained, kind, &dataset, &config)
            .run(&device, &mut |_: TrainEvent| ControlFlow::Continue(())),
    )
    .expect("trains");
    let header = BundleHeader::new(kind, dataset.classes.clone(), kind.card().input_size);
    bundle::encode(header, &trained.model).expect("encodes")
}

/// Both models, fine-tuned once for every test here.
fn model_file(kind: ModelKind) -> &'static [u8] {
    static FILES: OnceLock<Vec<(ModelKind, Vec<u8>)>> = OnceLock::new();
    let files = FILES.get_or_init(|| ModelKind::ALL.into_iter().map(|k| (k, fine_tuned(k))).collect());
    &files.iter().find(|(k, _)| *k == kind).expect("both models").1
}

fn export(kind: ModelKind, format: ExportFormat) -> Vec<export::ExportedFile> {
    pollster::block_on(export::export(
        "test.graft",
        model_file(kind),
        format,
        "model",
        Some(&web_page::runtime()),
        &Device::flex(),
    ))
    .expect("exports")
}

/// The fixture photos as the model file's preprocessing makes them, `[N, 3, S, S]`, and the engine's
/// probabilities for them.
fn inputs_and_engine(bytes: &[u8]) -> (BundleHeader, Vec<f32>, Vec<Vec<f32>>) {
    let device = Device::flex();
    let (header, model) = bundle::decode("test.graft", bytes, &device).expect("decodes");
    let mut inputs = Vec::new();
    let mut probabilities = Vec::new();
    for photo in PHOTOS {
        let image = preprocess::decode(&std::fs::read(e2e::fixture_photo(photo)).unwrap()).unwrap();
        let input = header.input(&image, &device);
        inputs.extend(pollster::block_on(readback::to_f32_vec(input.clone())).unwrap());
        let logits = pollster::block_on(readback::to_f32_vec(model.forward(input))).unwrap();
        probabilities.push(metrics::softmax(&logits));
    }
    (header, inputs, probabilities)
}

fn argmax(values: &[f32]) -> usize {
    metrics::top_k(values, 1)[0].0
}

#[test]
fn onnx_runs_in_tract_as_in_the_engine_with_labels_and_preprocessing() {
    for kind in ModelKind::ALL {
        let files = export(kind, ExportFormat::Onnx);
        assert_eq!(files.len(), 2, "the model and labels.json");
        assert_eq!(files[0].name, "model.onnx");
        assert_eq!(files[1].name, "labels.json");
        let bytes = &files[0].bytes;
        let (header, inputs, engine) = inputs_and_engine(model_file(kind));
        let size = header.input_size;

        // Metadata: a reader needs nothing else.
        let meta = |key: &str| onnx::metadata(bytes, key).unwrap_or_else(|| panic!("no {key} in the metadata"));
        let labels: Vec<String> = serde_json::from_str(&meta("labels")).unwrap();
        assert_eq!(labels, header.classes);
        let preprocessing: serde_json::Value = serde_json::from_str(&meta("preprocessing")).unwrap();
        assert_eq!(preprocessing["center_crop"], size);
        assert_eq!(
            preprocessing["resize_short_side"],
            header.resize_short_side.max(size as u32)
        );
        let mean: Vec<f32> = serde_json::from_value(preprocessing["mean"].clone()).unwrap();
        assert_eq!(mean, header.normalisation.mean.to_vec());
        let proto = tract_onnx::onnx().proto_model_for_read(&mut bytes.as_slice()).unwrap();
        assert!(
            proto
                .opset_import
                .iter()
                .any(|o| o.domain.is_empty() && o.version >= 13)
        );

        // The whole batch at once (the batch axis is the graph's one free dimension).
        let n = PHOTOS.len();
        let (logits, probabilities) = onnx::run(bytes, &inputs, n, size);
        assert_eq!(probabilities.len(), n);
        let mut worst = 0f32;
        for (i, expected) in engine.iter().enumerate() {
            let (row, row_logits) = (&probabilities[i], &logits[i]);
            assert_eq!(row.len(), header.classes.len());
            for (a, b) in row.iter().zip(expected) {
                worst = worst.max((a - b).abs());
            }
            assert_eq!(argmax(row), argmax(expected), "{kind} {}: top-1", PHOTOS[i]);
            assert_eq!(
                argmax(row_logits),
                argmax(expected),
                "{kind} {}: logits' top-1",
                PHOTOS[i]
            );
        }
        println!(
            "{kind}: ONNX ({} bytes) in tract vs the engine on {n} photos: max |probability diff| {worst:.2e}",
            bytes.len()
        );
        assert!(worst <= 1e-4, "{kind}: max |probability diff| {worst}");
    }
}

/// Graft's module path for a PyTorch name through the importer's own remaps (regex, `$n` groups), as
/// the checkpoint import applies them.
fn importer_path(kind: ModelKind, name: &str) -> Option<String> {
    kind.key_remaps().iter().find_map(|(from, to)| {
        let re = regex_lite(from);
        re(name).map(|groups| {
            let mut out = to.clone();
            for (i, g) in groups.iter().enumerate().rev() {
                out = out.replace(&format!("${}", i + 1), g);
            }
            out
        })
    })
}

/// The importer's remap patterns are anchored, with `\.` for dots and `(.+)` / `(\d+)` groups: matched
/// here without a regex crate, by splitting on the groups.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> Option<Vec<String>> {
    let body = pattern
        .trim_start_matches('^')
        .trim_end_matches('$')
        .replace(r"\.", ".");
    let mut literals = Vec::new();
    let mut rest = body.as_str();
    let mut kinds = Vec::new();
    while let Some(start) = rest.find('(') {
        literals.push(rest[..start].to_string());
        let end = rest[start..].find(')').expect("closed group") + start;
        kinds.push(rest[start + 1..end].to_string());
        rest = &rest[end + 1..];
    }
    literals.push(rest.to_string());
    move |name: &str| {
        let mut groups = Vec::new();
        let mut at = name.strip_prefix(literals[0].as_str())?;
        for (i, kind) in kinds.iter().enumerate() {
            let next = &literals[i + 1];
            let end = if next.is_empty() {
                at.len()
            } else {
                at.find(next.as_str())?
            };
            let group = &at[..end];
            if group.is_empty() || (kind == r"\d+" && !group.chars().all(|c| c.is_ascii_digit())) {
                return None;
            }
            groups.push(group.to_string());
            at = &at[end + next.len()..];
        }
        at.is_empty().then_some(groups)
    }
}

#[test]
fn safetensors_carry_pytorch_names_and_load_back_to_identical_logits() {
    let device = Device::flex();
    for kind in ModelKind::ALL {
        let files = export(kind, ExportFormat::Safetensors);
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["model.safetensors", "labels.json"]);
        let (header, model) = bundle::decode("test.graft", model_file(kind), &device).unwrap();
        let labels: serde_json::Value = serde_json::from_slice(&files[1].bytes).unwrap();
        assert_eq!(labels["labels"], serde_json::json!(header.classes));
        assert_eq!(labels["pytorch"]["num_classes"], header.classes.len());

        let file = safetensors::SafeTensors::deserialize(&files[0].bytes).expect("a safetensors file");
        let classes = header.classes.len();
        // Every tensor of the model, once, with its PyTorch shape.
        let (layers, classifier) = pytorch::layer_names(kind);
        assert_eq!(
            file.len(),
            layers.len() * 6 + 2,
            "{kind}: conv + 5 BatchNorm tensors a layer, and the head"
        );
        let shape = |name: &str| {
            file.tensor(name)
                .unwrap_or_else(|_| panic!("{kind}: no {name}"))
                .shape()
                .to_vec()
        };
        assert_eq!(shape(&format!("{classifier}.weight")), [classes, 1280]);
        assert_eq!(shape(&format!("{classifier}.bias")), [classes]);
        match kind {
            // torchvision's names are the importer's: each maps back onto the layer it came from.
            ModelKind::MobileNetV2 => {
                for (name, _) in file.tensors() {
                    if name.ends_with("num_batches_tracked") {
                        continue;
                    }
                    let path = importer_path(kind, &name).unwrap_or_else(|| panic!("{name}: not a torchvision name"));
                    let layer = layers.iter().find(|l| {
                        name.starts_with(&format!("{}.", l.conv)) || name.starts_with(&format!("{}.", l.norm))
                    });
                    match layer {
                        Some(layer) => assert!(
                            path.starts_with(&format!("{}.", layer.graft)),
                            "{name} -> {path}, from {}",
                            layer.graft
                        ),
                        None => assert!(path.starts_with("classifier."), "{name} -> {path}"),
                    }
                }
                assert_eq!(shape("features.0.0.weight"), [32, 3, 3, 3]);
                assert_eq!(shape("features.1.conv.1.weight"), [16, 32, 1, 1]);
                assert_eq!(shape("features.17.conv.2.weight"), [320, 960, 1, 1]);
                assert_eq!(shape("features.18.1.running_var"), [1280]);
            }
            // timm's `tf_efficientnet_lite0`, as its builder lays it out.
            ModelKind::EfficientNetLite0 => {
                assert_eq!(shape("conv_stem.weight"), [32, 3, 3, 3]);
                assert_eq!(shape("bn1.weight"), [32]);
                assert_eq!(shape("blocks.0.0.conv_dw.weight"), [32, 1, 3, 3]);
                assert_eq!(shape("blocks.0.0.conv_pw.weight"), [16, 32, 1, 1]);
                assert_eq!(shape("blocks.1.0.conv_pw.weight"), [96, 16, 1, 1]);
                assert_eq!(shape("blocks.2.1.conv_dw.weight"), [240, 1, 5, 5]);
                assert_eq!(shape("blocks.5.3.bn3.running_mean"), [192]);
                assert_eq!(shape("blocks.6.0.conv_pwl.weight"), [320, 1152, 1, 1]);
                assert_eq!(shape("conv_head.weight"), [1280, 320, 1, 1]);
                assert_eq!(shape("bn2.running_var"), [1280]);
            }
        }
        assert_eq!(
            file.tensor(&format!("{}.num_batches_tracked", layers[0].norm))
                .unwrap()
                .dtype(),
            safetensors::Dtype::I64
        );

        // Loaded back into a fresh model through Burn's PyTorch adapter: the same logits, exactly.
        let mut store = SafetensorsStore::from_bytes(Some(files[0].bytes.clone()))
            .with_from_adapter(PyTorchToBurnAdapter)
            .validate(false)
            .allow_partial(true);
        for layer in &layers {
            store = store
                .with_key_remapping(
                    format!("^{}\\.(.+)$", layer.conv.replace('.', "\\.")),
                    format!("{}.conv.$1", layer.graft),
                )
                .with_key_remapping(
                    format!("^{}\\.(.+)$", layer.norm.replace('.', "\\.")),
                    format!("{}.norm.$1", layer.graft),
                );
        }
        store = store.with_key_remapping(format!("^{}\\.(.+)$", classifier.replace('.', "\\.")), "classifier.$1");
        let mut loaded: ImageClassifier = kind.architecture().init(classes, &device);
        let result = loaded.load_from(&mut store).expect("loads");
        assert!(result.missing.is_empty(), "{kind}: missing {:?}", result.missing);
        let image = preprocess::decode(&std::fs::read(e2e::fixture_photo(PHOTOS[1])).unwrap()).unwrap();
        let input = header.input(&image, &device);
        let original = pollster::block_on(readback::to_f32_vec(model.forward(input.clone()))).unwrap();
        let back = pollster::block_on(readback::to_f32_vec(loaded.forward(input))).unwrap();
        assert_eq!(original, back, "{kind}: logits after the round trip");
        println!(
            "{kind}: safetensors ({} bytes, {} tensors) loads back to identical logits",
            files[0].bytes.len(),
            file.len()
        );
    }
}

#[test]
fn a_damaged_model_file_is_refused_with_a_typed_error() {
    let bytes = model_file(ModelKind::MobileNetV2);
    let truncated = &bytes[..bytes.len() - 1000];
    let mut flipped = bytes.to_vec();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x40;
    for (what, damaged) in [("truncated", truncated), ("one bit flipped", flipped.as_slice())] {
        for format in [ExportFormat::Onnx, ExportFormat::Safetensors, ExportFormat::Web] {
            let result = pollster::block_on(export::export(
                "damaged.graft",
                damaged,
                format,
                "model",
                Some(&web_page::runtime()),
                &Device::flex(),
            ));
            match result {
                Err(ExportError::Bundle(error)) => println!("{what}, {}: {error}", format.name()),
                other => panic!("{what}, {}: {other:?}", format.name()),
            }
        }
    }
}

/// What the page in `client` shows for each picture: its file name and the probabilities of every
/// label (in the labels' order, at full precision from the page's `data-probabilities`), once
/// `count` pictures are shown.
async fn web_results(client: &fantoccini::Client, count: usize) -> Vec<(String, Vec<f32>)> {
    let script = "return [...document.querySelectorAll('[data-testid=web-result]')].map(section =>
        [section.dataset.file, section.dataset.probabilities || null, section.dataset.error || null]);";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let shown = client.execute(script, vec![]).await.expect("script");
        let shown: Vec<(String, Option<String>, Option<String>)> = serde_json::from_value(shown).expect("rows");
        if let Some((file, _, Some(error))) = shown.iter().find(|row| row.2.is_some()) {
            panic!("the page could not classify {file}: {error}");
        }
        if shown.len() >= count {
            return shown
                .into_iter()
                .map(|(file, probabilities, _)| {
                    let probabilities = serde_json::from_str(&probabilities.expect("probabilities")).expect("numbers");
                    (file, probabilities)
                })
                .collect();
        }
        let status = client
            .execute("return document.getElementById('status').textContent", vec![])
            .await;
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {count} results; status {status:?}",
            shown.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The offline web page, as a person gets it (the zip, unpacked) and opens it — from a loopback
/// server and from `file://` — in headless Chromium with every request off the loopback interface
/// caught: the fixture photos get the engine's top-1 and probabilities within 1e-4, for both
/// architectures (EfficientNet-Lite0's TensorFlow "SAME" padding included); the page's `model.js`,
/// read natively by its own runtime, gives the same; the README's snippet, pasted into a page of
/// one's own, answers with the engine's top label; nothing leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_classifies_offline_as_the_engine_does() {
    let root = std::env::temp_dir().join(format!("graft-web-page-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // Fine-tuning blocks: off the runtime's threads.
    let exported = tokio::task::spawn_blocking(|| {
        ModelKind::ALL.map(|kind| {
            (
                kind,
                export(kind, ExportFormat::Web),
                inputs_and_engine(model_file(kind)),
            )
        })
    })
    .await
    .expect("fine-tunes and exports");
    let driver = e2e::ChromeDriver::start();
    let watch = e2e::OutboundWatch::start();
    let client = driver.session_watched(&watch).await;
    let photos: Vec<std::path::PathBuf> = PHOTOS.iter().map(|p| e2e::fixture_photo(p)).collect();
    for (kind, files, (header, _, engine)) in exported {
        assert_eq!(files.len(), 1, "one zip");
        assert_eq!(files[0].name, "model.zip");
        let folder = web_page::unpack(&files[0].bytes, &root.join(kind.card().name));
        let mut names: Vec<String> = std::fs::read_dir(&folder)
            .expect("the folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["README.md", "graft.js", "index.html", "model.js"]);
        let sizes: Vec<u64> = names
            .iter()
            .map(|n| std::fs::metadata(folder.join(n)).expect("size").len())
            .collect();
        println!(
            "{kind}: web page {names:?} of {sizes:?} bytes, zip {} bytes",
            files[0].bytes.len()
        );

        // The model the page carries, natively through the page's runtime.
        let classifier = web_page::classifier(&std::fs::read_to_string(folder.join("model.js")).expect("model.js"));
        assert_eq!(classifier.labels(), header.classes);
        for (photo, want) in photos.iter().zip(&engine) {
            let got = classifier
                .classify_file(&std::fs::read(photo).expect("photo"))
                .expect("classifies");
            let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-4, "{kind} {}: natively max |diff| {worst}", photo.display());
            assert_eq!(argmax(&got), argmax(want));
        }

        let server = e2e::StaticServer::start(folder.clone());
        let file_url = format!("file://{}", folder.join("index.html").display());
        for (how, url) in [("loopback", server.url("/index.html")), ("file://", file_url)] {
            client.goto(&url).await.expect("opens the page");
            e2e::wait_for_text(&client, "#status", std::time::Duration::from_secs(60), |t| {
                t.starts_with("Ready")
            })
            .await
            .unwrap_or_else(|e| panic!("{kind} {how}: {e}"));
            e2e::upload(&client, "web-file", &photos).await;
            let shown = web_results(&client, photos.len()).await;
            let mut worst = 0.0f32;
            for (photo, want) in PHOTOS.iter().zip(&engine) {
                let (_, got) = shown
                    .iter()
                    .find(|(file, _)| file == photo)
                    .unwrap_or_else(|| panic!("{kind} {how}: no result for {photo}: {shown:?}"));
                assert_eq!(got.len(), want.len(), "{kind} {how} {photo}: one probability per label");
                worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(worst, f32::max);
                assert_eq!(argmax(got), argmax(want), "{kind} {how} {photo}: top-1");
            }
            println!("{kind} in Chromium from {how}: max |probability diff| vs the engine {worst:.2e}");
            assert!(worst <= 1e-4, "{kind} {how}: max |probability diff| {worst}");
        }
        if kind == ModelKind::MobileNetV2 {
            let shot = e2e::screenshot(&client, "web-page-export").await;
            println!("the exported page: {}", shot.display());
            // The README's lines, pasted into a page of one's own beside model.js and graft.js.
            let readme = std::fs::read_to_string(folder.join("README.md")).expect("README.md");
            let snippet = readme
                .split("```html\n")
                .nth(1)
                .and_then(|rest| rest.split("```").next())
                .expect("an html snippet in the README");
            std::fs::write(
                folder.join("mine.html"),
                format!("<!doctype html>\n<meta charset=utf-8>\n{snippet}"),
            )
            .expect("write");
            client.goto(&server.url("/mine.html")).await.expect("opens");
            client
                .find(fantoccini::Locator::Css("#picture"))
                .await
                .expect("the snippet's input")
                .send_keys(&photos[1].display().to_string())
                .await
                .expect("chooses");
            let answer = e2e::wait_for_text(&client, "#answer", std::time::Duration::from_secs(60), |t| {
                !t.is_empty()
            })
            .await
            .expect("the snippet answers");
            let top = argmax(&engine[1]);
            let expected = format!("{} ({:.1}%)", header.classes[top], engine[1][top] * 100.0);
            println!("the README's snippet answers {answer:?} for {}", PHOTOS[1]);
            assert_eq!(answer, expected);
        }
    }
    watch.assert_nothing_left(&client).await;
    client.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&root);
}
