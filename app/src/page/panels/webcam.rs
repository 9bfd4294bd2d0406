//! The webcam: frames to a class or to the try-it predictions.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::protocol::WorkerRequest;

use crate::page::state::{CameraTarget, Trying};
use crate::page::{bridge, studio};

/// The largest side webcam frames are sent at (the worker downscales to 256 anyway).
pub(crate) const FRAME_SIDE: u32 = 320;

/// One webcam frame as RGBA pixels, scaled to at most `FRAME_SIDE`.
pub(crate) fn grab_frame(video: &web_sys::HtmlVideoElement) -> Option<(u32, u32, Vec<u8>)> {
    let (w, h) = (video.video_width(), video.video_height());
    if w == 0 || h == 0 {
        return None;
    }
    let scale = (FRAME_SIDE as f64 / w.max(h) as f64).min(1.0);
    let (width, height) = (((w as f64) * scale).round() as u32, ((h as f64) * scale).round() as u32);
    let document = web_sys::window()?.document()?;
    let canvas: web_sys::HtmlCanvasElement = document.create_element("canvas").ok()?.unchecked_into();
    canvas.set_width(width);
    canvas.set_height(height);
    let context: web_sys::CanvasRenderingContext2d = canvas.get_context("2d").ok()??.unchecked_into();
    context
        .draw_image_with_html_video_element_and_dw_and_dh(video, 0.0, 0.0, width as f64, height as f64)
        .ok()?;
    let data = context.get_image_data(0.0, 0.0, width as f64, height as f64).ok()?;
    Some((width, height, data.data().0))
}

/// Calls its tick every so many milliseconds until dropped.
type Interval = gloo_timers::callback::Interval;

/// The webcam panel: a live preview; for a class, hold the button to record frames into it; for
/// try-it, a prediction every 700 ms.
#[component]
pub(crate) fn Webcam() -> impl IntoView {
    let studio = studio();
    let video = NodeRef::<leptos::html::Video>::new();
    let stream = StoredValue::new_local(None::<web_sys::MediaStream>);
    let recording = StoredValue::new_local(None::<Interval>);
    let live = StoredValue::new_local(None::<Interval>);
    let frames = StoredValue::new_local(Vec::<(u32, u32, Vec<u8>)>::new());
    let recorded = RwSignal::new(0usize);
    let stop_camera = move || {
        recording.set_value(None);
        live.set_value(None);
        if let Some(stream) = stream.get_value() {
            for track in stream.get_tracks().iter() {
                track.unchecked_into::<web_sys::MediaStreamTrack>().stop();
            }
        }
        stream.set_value(None);
    };
    // Open the camera when a target is chosen, close it when none is.
    Effect::new(move |_| {
        let target = studio.camera.get();
        let Some(target) = target else {
            stop_camera();
            return;
        };
        let Some(element) = video.get() else { return };
        if stream.with_value(Option::is_none) {
            let element = element.clone();
            leptos::task::spawn_local(async move {
                let devices = web_sys::window().and_then(|w| w.navigator().media_devices().ok());
                let Some(devices) = devices else {
                    studio.say(true, "This browser offers no camera access.");
                    studio.camera.set(None);
                    return;
                };
                let constraints = web_sys::MediaStreamConstraints::new();
                constraints.set_video(&wasm_bindgen::JsValue::TRUE);
                let opened = match devices.get_user_media_with_constraints(&constraints) {
                    Ok(promise) => wasm_bindgen_futures::JsFuture::from(promise).await,
                    Err(error) => Err(error),
                };
                match opened {
                    Ok(media) => {
                        let media: web_sys::MediaStream = media.unchecked_into();
                        element.set_src_object(Some(&media));
                        let _ = element.play();
                        stream.set_value(Some(media));
                    }
                    Err(error) => {
                        studio.say(true, format!("The camera could not be opened: {error:?}"));
                        studio.camera.set(None);
                    }
                }
            });
        }
        if target == CameraTarget::Predict {
            studio.trying.update(Trying::start_live);
            studio.show_predicted(None);
            let element = element.clone();
            let bridge = bridge();
            live.set_value(Some(Interval::new(700, move || {
                if let Some((width, height, rgba)) = grab_frame(&element) {
                    let picture = studio.trying.try_update(Trying::ask_frame).unwrap_or_default();
                    bridge.send(&WorkerRequest::PredictFrame { width, height, picture }, vec![rgba]);
                }
            })));
        } else {
            live.set_value(None);
        }
    });
    let start_recording = move |_| {
        let Some(element) = video.get_untracked() else { return };
        frames.set_value(Vec::new());
        recorded.set(0);
        recording.set_value(Some(Interval::new(150, move || {
            if let Some(frame) = grab_frame(&element) {
                frames.update_value(|f| f.push(frame));
                recorded.update(|n| *n += 1);
            }
        })));
    };
    let stop_recording = move |_| {
        if recording.with_value(Option::is_none) {
            return;
        }
        recording.set_value(None);
        let captured = std::mem::take(&mut *frames.write_value());
        let Some(CameraTarget::Class(class)) = studio.camera.get_untracked() else {
            return;
        };
        let Some(&(width, height, _)) = captured.first() else {
            return;
        };
        let payloads: Vec<Vec<u8>> = captured
            .into_iter()
            .filter(|(w, h, _)| (*w, *h) == (width, height))
            .map(|(_, _, rgba)| rgba)
            .collect();
        bridge().send(&WorkerRequest::AddFrames { class, width, height }, payloads);
    };
    let title = move || match studio.camera.get() {
        Some(CameraTarget::Class(id)) => {
            let name = studio
                .classes
                .with(|classes| classes.iter().find(|c| c.id == id).map(|c| c.name.clone()));
            format!("Webcam → {}", name.unwrap_or_default())
        }
        Some(CameraTarget::Predict) => "Webcam → live predictions".to_string(),
        None => String::new(),
    };
    view! {
        <div class="webcam" class:open=move || studio.camera.get().is_some() data-testid="webcam">
            <div class="webcam-head">
                <strong>{title}</strong>
                <button on:click=move |_| studio.camera.set(None) data-testid="webcam-close">"Close"</button>
            </div>
            <video node_ref=video autoplay=true muted=true playsinline=true></video>
            {move || {
                matches!(studio.camera.get(), Some(CameraTarget::Class(_)))
                    .then(|| {
                        view! {
                            <button
                                class="record"
                                data-testid="webcam-record"
                                on:pointerdown=start_recording
                                on:pointerup=stop_recording
                                on:pointerleave=stop_recording
                            >
                                {move || match recorded.get() {
                                    0 => "Hold to record".to_string(),
                                    n => format!("Hold to record ({n} frames)"),
                                }}
                            </button>
                        }
                    })
            }}
        </div>
    }
}
