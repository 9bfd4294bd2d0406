//! ONNX files run in tract, a pure-Rust ONNX runtime that shares no code with Burn: what an exported
//! model gives outside Graft.

use tract_onnx::prelude::*;

/// The `logits` and `probabilities` an ONNX classifier gives for `inputs` (`n` preprocessed images,
/// `[n, 3, size, size]` flattened), one row per image.
pub fn run(onnx: &[u8], inputs: &[f32], n: usize, size: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .expect("tract reads the ONNX file")
        .with_input_fact(0, f32::fact([n, 3, size, size]).into())
        .expect("the input is [N, 3, S, S]")
        .into_optimized()
        .expect("tract optimises the graph")
        .into_runnable()
        .expect("tract plans it");
    let input = Tensor::from_shape(&[n, 3, size, size], inputs).expect("input shape");
    let outputs = model.run(tvec!(input.into())).expect("tract runs it");
    let rows = |i: usize| -> Vec<Vec<f32>> {
        let view = outputs[i].to_plain_array_view::<f32>().expect("float output");
        view.outer_iter().map(|row| row.iter().copied().collect()).collect()
    };
    (rows(0), rows(1))
}

/// An ONNX file's `metadata_props` entry `key`.
pub fn metadata(onnx: &[u8], key: &str) -> Option<String> {
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &onnx[..])
        .expect("tract parses it");
    proto
        .metadata_props
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.clone())
}
