//! A [`NetworkSpec`] as one safetensors file: every weight a named float32 tensor
//! (`body.{block}.{conv}.weight`, `.bias`, `.scale`, `.shift`; `classifier.weight`, `.bias`), the
//! layers' shapes as JSON in the `__metadata__` under [`LAYERS_KEY`], beside whatever else the writer
//! adds there (the offline web page's model adds the labels and the preprocessing).

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::network::{Affine, ConvSpec, LayerSpec, LinearSpec, NetworkError, NetworkSpec, Padding};

/// The metadata key holding the layers' shapes.
pub const LAYERS_KEY: &str = "graft.network";
/// The metadata key holding the format's version.
pub const FORMAT_KEY: &str = "graft.format";
const FORMAT: &str = "graft-network-1";

/// Why a network file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum NetworkFileError {
    #[error("not a network file: {0}")]
    Format(String),
    #[error("the network file is damaged: {0}")]
    Damaged(String),
    #[error(transparent)]
    Shape(#[from] NetworkError),
}

#[derive(Serialize, Deserialize)]
struct ConvLayout {
    out_channels: usize,
    in_per_group: usize,
    groups: usize,
    size: usize,
    stride: usize,
    tf_same: bool,
    relu6: bool,
    bias: bool,
    norm: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LayerLayout {
    Conv {
        conv: ConvLayout,
    },
    Residual {
        expand: Option<ConvLayout>,
        depthwise: ConvLayout,
        project: ConvLayout,
        skip: bool,
    },
}

#[derive(Serialize, Deserialize)]
struct Layout {
    body: Vec<LayerLayout>,
    classifier_inputs: usize,
    classifier_outputs: usize,
    classifier_bias: bool,
}

fn layout(conv: &ConvSpec) -> ConvLayout {
    ConvLayout {
        out_channels: conv.out_channels,
        in_per_group: conv.in_per_group,
        groups: conv.groups,
        size: conv.size,
        stride: conv.stride,
        tf_same: conv.padding == Padding::TfSame,
        relu6: conv.relu6,
        bias: conv.bias.is_some(),
        norm: conv.norm.is_some(),
    }
}

fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `spec` as a safetensors file, with `metadata` beside the layers' shapes.
pub fn to_bytes(spec: &NetworkSpec, metadata: &HashMap<String, String>) -> Result<Vec<u8>, NetworkFileError> {
    spec.check()?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add_conv = |prefix: String, conv: &ConvSpec| {
        let shape = vec![conv.out_channels, conv.in_per_group, conv.size, conv.size];
        tensors.push((format!("{prefix}.weight"), shape, bytes(&conv.weights)));
        let n = vec![conv.out_channels];
        if let Some(bias) = &conv.bias {
            tensors.push((format!("{prefix}.bias"), n.clone(), bytes(bias)));
        }
        if let Some(norm) = &conv.norm {
            tensors.push((format!("{prefix}.scale"), n.clone(), bytes(&norm.scale)));
            tensors.push((format!("{prefix}.shift"), n, bytes(&norm.shift)));
        }
    };
    let mut body = Vec::with_capacity(spec.body.len());
    for (index, layer) in spec.body.iter().enumerate() {
        for (position, conv) in layer.convs().into_iter().enumerate() {
            add_conv(format!("body.{index}.{position}"), conv);
        }
        body.push(match layer {
            LayerSpec::Conv(conv) => LayerLayout::Conv { conv: layout(conv) },
            LayerSpec::Residual {
                expand,
                depthwise,
                project,
                skip,
            } => LayerLayout::Residual {
                expand: expand.as_ref().map(layout),
                depthwise: layout(depthwise),
                project: layout(project),
                skip: *skip,
            },
        });
    }
    let linear = &spec.classifier;
    tensors.push((
        "classifier.weight".into(),
        vec![linear.inputs, linear.outputs],
        bytes(&linear.weights),
    ));
    if let Some(bias) = &linear.bias {
        tensors.push(("classifier.bias".into(), vec![linear.outputs], bytes(bias)));
    }
    let layout = Layout {
        body,
        classifier_inputs: linear.inputs,
        classifier_outputs: linear.outputs,
        classifier_bias: linear.bias.is_some(),
    };
    let mut metadata = metadata.clone();
    metadata.insert(FORMAT_KEY.into(), FORMAT.into());
    metadata.insert(
        LAYERS_KEY.into(),
        serde_json::to_string(&layout).map_err(|e| NetworkFileError::Format(e.to_string()))?,
    );
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| NetworkFileError::Format(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| NetworkFileError::Format(e.to_string()))
}

/// Reads a file written by [`to_bytes`]: the network, checked, and the file's other metadata.
pub fn from_bytes(file: &[u8]) -> Result<(NetworkSpec, HashMap<String, String>), NetworkFileError> {
    let damaged = |e: safetensors::SafeTensorError| NetworkFileError::Damaged(e.to_string());
    let (_, header) = SafeTensors::read_metadata(file).map_err(damaged)?;
    let mut metadata = header.metadata().clone().unwrap_or_default();
    if metadata.remove(FORMAT_KEY).as_deref() != Some(FORMAT) {
        return Err(NetworkFileError::Format(format!(
            "no {FORMAT_KEY} = {FORMAT} in its metadata"
        )));
    }
    let layout: Layout = metadata
        .remove(LAYERS_KEY)
        .ok_or_else(|| NetworkFileError::Format(format!("no {LAYERS_KEY} in its metadata")))
        .and_then(|json| serde_json::from_str(&json).map_err(|e| NetworkFileError::Format(e.to_string())))?;
    let tensors = SafeTensors::deserialize(file).map_err(damaged)?;
    let floats = |name: &str, len: usize| -> Result<Vec<f32>, NetworkFileError> {
        let view = tensors.tensor(name).map_err(damaged)?;
        if view.dtype() != Dtype::F32 || view.data().len() != len * 4 {
            return Err(NetworkFileError::Damaged(format!("{name} is not {len} float32 values")));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    let conv = |prefix: String, l: &ConvLayout| -> Result<ConvSpec, NetworkFileError> {
        let n = l.out_channels;
        let weights = l
            .out_channels
            .checked_mul(l.in_per_group)
            .and_then(|x| x.checked_mul(l.size))
            .and_then(|x| x.checked_mul(l.size))
            .ok_or_else(|| NetworkFileError::Format(format!("{prefix}: sizes overflow")))?;
        Ok(ConvSpec {
            out_channels: n,
            in_per_group: l.in_per_group,
            groups: l.groups,
            size: l.size,
            stride: l.stride,
            padding: if l.tf_same { Padding::TfSame } else { Padding::Symmetric },
            relu6: l.relu6,
            weights: floats(&format!("{prefix}.weight"), weights)?,
            bias: if l.bias {
                Some(floats(&format!("{prefix}.bias"), n)?)
            } else {
                None
            },
            norm: if l.norm {
                Some(Affine {
                    scale: floats(&format!("{prefix}.scale"), n)?,
                    shift: floats(&format!("{prefix}.shift"), n)?,
                })
            } else {
                None
            },
        })
    };
    let mut body = Vec::with_capacity(layout.body.len());
    for (index, layer) in layout.body.iter().enumerate() {
        let name = |position: usize| format!("body.{index}.{position}");
        body.push(match layer {
            LayerLayout::Conv { conv: c } => LayerSpec::Conv(conv(name(0), c)?),
            LayerLayout::Residual {
                expand,
                depthwise,
                project,
                skip,
            } => {
                let offset = usize::from(expand.is_some());
                LayerSpec::Residual {
                    expand: expand.as_ref().map(|e| conv(name(0), e)).transpose()?,
                    depthwise: conv(name(offset), depthwise)?,
                    project: conv(name(offset + 1), project)?,
                    skip: *skip,
                }
            }
        });
    }
    let (inputs, outputs) = (layout.classifier_inputs, layout.classifier_outputs);
    let weights = inputs
        .checked_mul(outputs)
        .ok_or_else(|| NetworkFileError::Format("classifier sizes overflow".into()))?;
    let spec = NetworkSpec {
        body,
        classifier: LinearSpec {
            inputs,
            outputs,
            weights: floats("classifier.weight", weights)?,
            bias: if layout.classifier_bias {
                Some(floats("classifier.bias", outputs)?)
            } else {
                None
            },
        },
    };
    spec.check()?;
    Ok((spec, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::values;

    fn conv(out: usize, inp: usize, groups: usize, size: usize, stride: usize, seed: u32) -> ConvSpec {
        ConvSpec {
            out_channels: out,
            in_per_group: inp / groups,
            groups,
            size,
            stride,
            padding: if stride == 2 {
                Padding::TfSame
            } else {
                Padding::Symmetric
            },
            relu6: seed.is_multiple_of(2),
            weights: values(out * (inp / groups) * size * size, seed),
            bias: Some(values(out, seed + 1)),
            norm: seed.is_multiple_of(3).then(|| Affine {
                scale: values(out, seed + 2),
                shift: values(out, seed + 3),
            }),
        }
    }

    /// A small network of every kind of layer.
    fn small() -> NetworkSpec {
        NetworkSpec {
            body: vec![
                LayerSpec::Conv(conv(8, 3, 1, 3, 2, 1)),
                LayerSpec::Residual {
                    expand: None,
                    depthwise: conv(8, 8, 8, 3, 1, 2),
                    project: conv(8, 8, 1, 1, 1, 3),
                    skip: true,
                },
                LayerSpec::Residual {
                    expand: Some(conv(16, 8, 1, 1, 1, 4)),
                    depthwise: conv(16, 16, 16, 5, 2, 5),
                    project: conv(12, 16, 1, 1, 1, 6),
                    skip: false,
                },
                LayerSpec::Conv(conv(20, 12, 1, 1, 1, 7)),
            ],
            classifier: LinearSpec {
                inputs: 20,
                outputs: 3,
                weights: values(60, 8),
                bias: Some(values(3, 9)),
            },
        }
    }

    #[test]
    fn a_network_file_reads_back_as_written_and_runs_the_same() {
        let spec = small();
        let metadata = HashMap::from([("labels".to_string(), "[\"a\",\"b\",\"c\"]".to_string())]);
        let file = to_bytes(&spec, &metadata).unwrap();
        let (read, read_metadata) = from_bytes(&file).unwrap();
        assert_eq!(read, spec);
        assert_eq!(read_metadata, metadata);
        let images = values(2 * 3 * 17 * 19, 10);
        let run = |spec: &NetworkSpec| {
            let net = crate::Network::new(spec).unwrap();
            net.classify(&net.embeddings(&images, [2, 3, 17, 19]))
        };
        assert_eq!(run(&read), run(&spec));
    }

    #[test]
    fn damaged_or_foreign_files_are_refused_with_a_reason() {
        let file = to_bytes(&small(), &HashMap::new()).unwrap();
        for cut in [0, 7, file.len() / 2, file.len() - 1] {
            let err = from_bytes(&file[..cut]).unwrap_err();
            assert!(matches!(err, NetworkFileError::Damaged(_)), "cut at {cut}: {err}");
        }
        let plain =
            safetensors::tensor::serialize([("x", TensorView::new(Dtype::F32, vec![1], &[0u8; 4]).unwrap())], None)
                .unwrap();
        assert!(matches!(from_bytes(&plain), Err(NetworkFileError::Format(_))));
        // Shapes that do not chain are refused before anything runs.
        let mut broken = small();
        broken.classifier.inputs = 19;
        broken.classifier.weights.truncate(57);
        assert!(matches!(
            to_bytes(&broken, &HashMap::new()),
            Err(NetworkFileError::Shape(_))
        ));
    }
}
