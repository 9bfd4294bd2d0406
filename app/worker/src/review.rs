//! Reviewing the pictures before training (`graft_engine::review`), beside the inbox: the frozen
//! body's embeddings (the cache the recommender and head-only training share), then the flagged
//! pictures by id and class id for the page.

use std::rc::Rc;

use graft_engine::data::Dataset;
use graft_engine::model::ModelKind;
use graft_engine::review::{self, ReviewConfig};

use graft_app::protocol::{ClassId, ReviewItem, Work, WorkerEvent};

use super::models::pretrained;
use super::state::STATE;
use super::{fail, post};

/// Reviews the pictures of `snapshot` (the dataset, its picture ids, its class ids) with `kind`.
pub(super) fn start(kind: ModelKind, snapshot: (Rc<Dataset>, Vec<u64>), class_ids: Vec<ClassId>) {
    wasm_bindgen_futures::spawn_local(async move {
        match run(kind, &snapshot.0, &snapshot.1, &class_ids).await {
            Ok(items) => post(&WorkerEvent::Reviewed { items }, Vec::new()),
            Err(message) => fail(Work::Review, message),
        }
    });
}

async fn run(
    kind: ModelKind,
    dataset: &Dataset,
    ids: &[u64],
    class_ids: &[ClassId],
) -> Result<Vec<ReviewItem>, String> {
    dataset.validate().map_err(|e| e.to_string())?;
    let model = pretrained(kind).await?;
    let mut cache = STATE.with_borrow_mut(|state| std::mem::take(&mut state.embeddings));
    let embeddings = review::embeddings(&model, kind, dataset, &mut cache).await;
    STATE.with_borrow_mut(|state| state.embeddings = cache);
    let embeddings = embeddings.map_err(|e| e.to_string())?;
    let found = review::review(
        &embeddings,
        &dataset.labels(),
        dataset.classes.len(),
        &ReviewConfig::default(),
    );
    Ok(found
        .suspects
        .into_iter()
        .map(|s| ReviewItem {
            image: ids[s.image],
            class: class_ids[s.class],
            suggested: s.suggested_class.map(|c| class_ids[c]),
            label_probability: s.label_probability,
            reason: s.reason,
            score: s.score,
            duplicate_of: s.duplicate_of.map(|i| ids[i]),
        })
        .collect())
}
