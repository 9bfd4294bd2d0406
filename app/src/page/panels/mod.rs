//! The page's panels, one component (with the small ones it alone uses) per file.

mod class_card;
mod compare;
mod compute;
mod data;
mod elsewhere;
mod messages;
mod model_picker;
mod recommendation;
mod results;
mod review;
mod training;
mod try_it;
mod webcam;

pub(crate) use class_card::ClassCard;
pub(crate) use compare::ComparePanel;
pub(crate) use compute::{ComputeSetting, current_choice};
pub(crate) use data::DataPanel;
pub(crate) use elsewhere::{Elsewhere, TAKE_OVER};
pub(crate) use messages::Messages;
pub(crate) use model_picker::ModelPicker;
pub(crate) use recommendation::RecommendationPanel;
pub(crate) use results::ResultsPanel;
pub(crate) use review::ReviewPanel;
pub(crate) use training::TrainingPanel;
pub(crate) use try_it::TryPanel;
pub(crate) use webcam::Webcam;
