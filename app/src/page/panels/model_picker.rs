//! The model cards: accuracy, size, speed measured here.

use graft_engine::model::ModelKind;
use leptos::prelude::*;

use crate::page::studio;

#[component]
pub(crate) fn ModelPicker() -> impl IntoView {
    let studio = studio();
    view! {
        <section class="panel models">
            <h2>"2. Pretrained model"</h2>
            <div class="cards">
                {ModelKind::ALL
                    .into_iter()
                    .map(|kind| {
                        let card = kind.card();
                        let choose = move |_| {
                            studio.model.set(kind);
                            studio.data_changed();
                        };
                        view! {
                            <button
                                class="model-card"
                                class:chosen=move || studio.model.get() == kind
                                data-testid=format!("model-{}", card.name)
                                on:click=choose
                            >
                                <strong>{card.display_name}</strong>
                                <span>{format!("ImageNet top-1 {:.1}%", card.imagenet_top1_percent)}</span>
                                <span>{format!("{} px input · {}", card.input_size, card.licence)}</span>
                                <span>
                                    {
                                        let parameters = kind.architecture().body_parameters();
                                        format!(
                                            "{:.1} M parameters to fine-tune · {:.1} MB",
                                            parameters as f64 / 1e6,
                                            parameters as f64 * 4.0 / 1e6,
                                        )
                                    }
                                </span>
                                <span class="speed">
                                    {move || {
                                        studio
                                            .speeds
                                            .get()
                                            .iter()
                                            .find(|(m, _)| *m == kind)
                                            .map_or(
                                                "speed here: not measured yet".to_string(),
                                                |(_, speed)| format!("{speed:.1} images/s here (measured)"),
                                            )
                                    }}
                                </span>
                            </button>
                        }
                    })
                    .collect_view()}
            </div>
        </section>
    }
}
