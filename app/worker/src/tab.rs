//! One tab at a time: the project is edited by the tab that holds it.
//!
//! A tab's worker asks for the Web Lock `graft-project` when it starts. If another tab holds it, this
//! tab opens nothing and the page says "Graft is open in another tab" with a button to use it here,
//! which takes the lock over (`steal`): the other tab's worker loses it, stops writing and says so, and
//! this one claims the store ([`Store::claim`](crate::store::Store::claim)) and reads the project as
//! the other tab left it. The store's holder mark backs the lock up where the lock cannot help (a
//! browser without Web Locks, a write already on its way when the lock changed hands): a write from a
//! tab that no longer holds the project writes nothing.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::store::StoreError;
use graft_app::protocol::WorkerEvent;

use super::post;
use super::state::{STATE, STOP};

/// The lock's name (per origin, as the store is).
const LOCK: &str = "graft-project";

#[wasm_bindgen]
extern "C" {
    /// `navigator.locks` (the Web Locks API; web-sys has it only among its unstable APIs).
    type LockManager;

    #[wasm_bindgen(method)]
    fn request(this: &LockManager, name: &str, options: &Object, callback: &Function) -> Promise;
}

fn lock_manager() -> Option<LockManager> {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let locks = Reflect::get(&navigator, &"locks".into()).ok()?;
    (!locks.is_undefined() && !locks.is_null()).then(|| locks.unchecked_into())
}

thread_local! {
    /// Whether this tab holds the project.
    static HOLDER: Cell<bool> = const { Cell::new(false) };
}

/// Whether this tab holds the project (edits are refused while it does not).
pub(super) fn holds() -> bool {
    HOLDER.get()
}

/// Asks for the project's lock, returning whether this tab holds it now: with `take_over`, from
/// whichever tab holds it; else only if no tab does. Without Web Locks the store's mark alone keeps
/// tabs apart, and the project is this tab's.
pub(super) async fn acquire(take_over: bool) -> bool {
    let Some(locks) = lock_manager() else {
        HOLDER.set(true);
        return true;
    };
    let options = Object::new();
    let flag = if take_over { "steal" } else { "ifAvailable" };
    let _ = Reflect::set(&options, &flag.into(), &JsValue::TRUE);

    // Resolved once the browser answers: with whether the lock is ours.
    let answer: Rc<RefCell<Option<Function>>> = Rc::default();
    let answered = Promise::new(&mut |resolve, _| *answer.borrow_mut() = Some(resolve));
    let granted = Rc::new(Cell::new(false));
    let callback = {
        let (answer, granted) = (answer.clone(), granted.clone());
        Closure::once_into_js(move |lock: JsValue| -> Promise {
            let held = !lock.is_null() && !lock.is_undefined();
            granted.set(held);
            if let Some(resolve) = answer.borrow_mut().take() {
                let _ = resolve.call1(&JsValue::NULL, &JsValue::from_bool(held));
            }
            if held {
                // Held until the worker ends or another tab takes it over.
                Promise::new(&mut |_, _| {})
            } else {
                Promise::resolve(&JsValue::UNDEFINED)
            }
        })
    };
    let request = locks.request(LOCK, &options, callback.unchecked_ref());
    // The request fails when the lock is taken over from us (or, before it was granted, when the
    // browser refuses locks here: then the store's mark alone keeps tabs apart).
    let on_failure = Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| {
        if granted.get() {
            lost();
        } else if let Some(resolve) = answer.borrow_mut().take() {
            let _ = resolve.call1(&JsValue::NULL, &JsValue::TRUE);
        }
    });
    let _ = request.catch(&on_failure);
    // Called at most once, when this request ends; a few bytes per lock asked for.
    on_failure.forget();
    let held = wasm_bindgen_futures::JsFuture::from(answered)
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    HOLDER.set(held);
    held
}

/// Another tab took the project over: this tab writes nothing from now on (a run in progress stops)
/// and the page says so.
pub(super) fn lost() {
    if !HOLDER.replace(false) {
        return;
    }
    STATE.with_borrow_mut(|state| {
        state.store = None;
        state.unsaved.clear();
        state.unsaved_model = None;
    });
    STOP.with(|stop| stop.set(true));
    post(&WorkerEvent::OpenElsewhere { taken: true }, Vec::new());
}

/// Whether a store write failed because another tab holds the project (and if so, [`lost`] is done:
/// the page shows that rather than a failure).
pub(super) fn taken_over(error: &StoreError) -> bool {
    let taken = matches!(error, StoreError::TakenOver);
    if taken {
        lost();
    }
    taken
}
