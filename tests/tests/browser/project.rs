//! What the page keeps with a project, read back across versions.

use graft_app::protocol::ProjectView;
use graft_engine::model::ModelKind;
use graft_engine::strategy::StrategyKind;
use wasm_bindgen_test::wasm_bindgen_test;

/// A project stored by the version before strategies were typed (the strategy as its name) reads
/// back as the same kind, and is stored again under the same name.
#[wasm_bindgen_test]
fn a_stored_view_names_its_strategy_as_the_previous_version_did() {
    let model = serde_json::to_string(&ModelKind::MobileNetV2).expect("serialises");
    let stored = format!(
        r#"{{"model":{model},"strategy":"partial-freeze","epochs":null,"lr":0.0005,"batch":16,"trainable_blocks":4,"augment":false}}"#
    );
    let view: ProjectView = serde_json::from_str(&stored).expect("the previous version's view reads");
    assert_eq!(view.strategy, Some(StrategyKind::PartialFreeze));
    assert_eq!(view.trainable_blocks, 4);
    let again = serde_json::to_value(&view).expect("serialises");
    assert_eq!(again["strategy"], "partial-freeze");
    for kind in StrategyKind::ALL {
        let json = stored.replace("partial-freeze", kind.name());
        let view: ProjectView = serde_json::from_str(&json).expect("every kind reads");
        assert_eq!(view.strategy, Some(kind));
    }
}
